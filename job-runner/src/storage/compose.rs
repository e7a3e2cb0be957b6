//! Planning an object made of other objects, end to end, for S3's multipart rules.
//!
//! S3 builds an object from up to [`ComposeLimits::max_parts`] parts, each but the last of at
//! least [`ComposeLimits::min_part`] bytes; a part may be a server-side copy of a byte range
//! of another object (`UploadPartCopy`, at most [`ComposeLimits::max_part`] bytes), so large
//! sources never pass through this process. Sources smaller than the minimum are read and
//! sent as one part together with their neighbours, at most `min_part` bytes at a time.

/// S3's limits (docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComposeLimits {
    /// Smallest part but the last: 5 MiB.
    pub min_part: u64,
    /// Largest part, copied or uploaded: 5 GiB.
    pub max_part: u64,
    /// Most parts of one upload: 10,000.
    pub max_parts: usize,
}

impl Default for ComposeLimits {
    fn default() -> Self {
        ComposeLimits {
            min_part: 5 * 1024 * 1024,
            max_part: 5 * 1024 * 1024 * 1024,
            max_parts: 10_000,
        }
    }
}

/// Bytes `start..end` of source `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub source: usize,
    pub start: u64,
    pub end: u64,
}

impl Slice {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One part of the composed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Copied by the server from a source.
    Copy(Slice),
    /// Read here and uploaded: small sources, or the head of a source that completes a part.
    Upload(Vec<Slice>),
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Copy(slice) => slice.len(),
            Piece::Upload(slices) => slices.iter().map(Slice::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parts, in order, that make the concatenation of sources of these `sizes`, every part
/// within `limits` except for their count (see [`group_pieces`]). Empty sources are left
/// out; no sources at all give no pieces.
pub fn plan_pieces(sizes: &[u64], limits: ComposeLimits) -> Vec<Piece> {
    let last = sizes.iter().rposition(|&size| size > 0);
    let mut pieces = Vec::new();
    let mut pending: Vec<Slice> = Vec::new();
    let mut pending_bytes = 0;
    for (source, &size) in sizes.iter().enumerate() {
        if size == 0 {
            continue;
        }
        let mut start = 0;
        if pending_bytes > 0 {
            // Complete the pending part with this source's first bytes.
            let take = size.min(limits.min_part - pending_bytes);
            pending.push(Slice {
                source,
                start: 0,
                end: take,
            });
            pending_bytes += take;
            start = take;
            if pending_bytes >= limits.min_part {
                pieces.push(Piece::Upload(std::mem::take(&mut pending)));
                pending_bytes = 0;
            }
        }
        let rest = size - start;
        if rest == 0 {
            continue;
        }
        if rest >= limits.min_part || (pending_bytes == 0 && Some(source) == last) {
            push_copies(&mut pieces, source, start, size, limits.max_part);
        } else {
            pending.push(Slice {
                source,
                start,
                end: size,
            });
            pending_bytes += rest;
        }
    }
    if !pending.is_empty() {
        pieces.push(Piece::Upload(pending));
    }
    pieces
}

/// Copies of `start..end` in as few near-equal ranges as fit `max_part` (each at least half
/// of it when there are several, so never under the minimum).
fn push_copies(pieces: &mut Vec<Piece>, source: usize, start: u64, end: u64, max_part: u64) {
    let length = end - start;
    let count = length.div_ceil(max_part);
    let (base, extra) = (length / count, length % count);
    let mut at = start;
    for i in 0..count {
        let len = base + u64::from(i < extra);
        pieces.push(Piece::Copy(Slice {
            source,
            start: at,
            end: at + len,
        }));
        at += len;
    }
}

/// Splits pieces into consecutive groups of at most `max_parts`: when there are more pieces
/// than one upload may hold, each group becomes an intermediate object (every one but the
/// last at least `min_part` bytes, since each of its parts is), and the result is composed
/// from those.
pub fn group_pieces(pieces: Vec<Piece>, max_parts: usize) -> Vec<Vec<Piece>> {
    let mut groups = Vec::new();
    let mut pieces = pieces.into_iter().peekable();
    while pieces.peek().is_some() {
        groups.push(pieces.by_ref().take(max_parts.max(1)).collect());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn limits() -> ComposeLimits {
        ComposeLimits {
            min_part: 5 * MIB,
            max_part: 20 * MIB,
            max_parts: 10_000,
        }
    }

    /// Checks every rule S3 applies to a completed upload, and that the pieces cover every
    /// byte of every source once, in order.
    fn check(sizes: &[u64], pieces: &[Piece], limits: ComposeLimits) {
        let mut covered: Vec<Slice> = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            assert!(piece.len() <= limits.max_part, "piece {i} too large");
            if i + 1 < pieces.len() {
                assert!(
                    piece.len() >= limits.min_part,
                    "piece {i} too small: {piece:?}"
                );
            }
            match piece {
                Piece::Copy(slice) => covered.push(*slice),
                Piece::Upload(slices) => covered.extend(slices),
            }
        }
        let mut expected = sizes
            .iter()
            .enumerate()
            .filter(|(_, size)| **size > 0)
            .map(|(source, _)| (source, 0u64));
        let mut position: Option<(usize, u64)> = None;
        for slice in covered {
            assert!(!slice.is_empty());
            let (source, start) = match position {
                Some((source, end)) if end < sizes[source] => (source, end),
                _ => expected.next().expect("no bytes beyond the sources"),
            };
            assert_eq!((slice.source, slice.start), (source, start));
            position = Some((slice.source, slice.end));
        }
        if let Some((source, end)) = position {
            assert_eq!(end, sizes[source], "the last source is covered to its end");
        }
        assert!(expected.next().is_none(), "every source is covered");
    }

    #[test]
    fn large_sources_are_copied_whole_and_small_ones_grouped() {
        let sizes = [6 * MIB, MIB, MIB, 7 * MIB, 0, 2 * MIB];
        let pieces = plan_pieces(&sizes, limits());
        check(&sizes, &pieces, limits());
        assert_eq!(
            pieces[0],
            Piece::Copy(Slice {
                source: 0,
                start: 0,
                end: 6 * MIB
            })
        );
        // 1 + 1 MiB pending, completed with 3 MiB of the 7 MiB source, whose rest (4 MiB)
        // is too small to copy: it is completed with 1 MiB of the last source, whose last
        // MiB is copied (the last part may be small).
        assert_eq!(pieces.len(), 4);
        assert!(matches!(&pieces[1], Piece::Upload(slices) if slices.len() == 3));
        assert!(matches!(&pieces[2], Piece::Upload(slices) if slices.len() == 2));
        assert!(matches!(pieces[3], Piece::Copy(slice) if slice.source == 5));
    }

    #[test]
    fn a_small_last_source_is_copied_when_nothing_is_pending() {
        let sizes = [6 * MIB, 100];
        let pieces = plan_pieces(&sizes, limits());
        check(&sizes, &pieces, limits());
        assert!(pieces.iter().all(|piece| matches!(piece, Piece::Copy(_))));
    }

    #[test]
    fn sources_over_the_largest_part_are_split_into_ranges() {
        let sizes = [45 * MIB + 3];
        let pieces = plan_pieces(&sizes, limits());
        check(&sizes, &pieces, limits());
        assert_eq!(pieces.len(), 3);
    }

    #[test]
    fn everything_small_is_one_upload() {
        let sizes = [10, 20, 0, 30];
        let pieces = plan_pieces(&sizes, limits());
        check(&sizes, &pieces, limits());
        assert_eq!(pieces.len(), 1);
        assert!(plan_pieces(&[0, 0], limits()).is_empty());
    }

    #[test]
    fn every_mix_of_sizes_follows_the_rules() {
        // A deterministic spread of sizes around the limits.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let count = (state % 12) as usize + 1;
            let sizes: Vec<u64> = (0..count)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    match state % 5 {
                        0 => 0,
                        1 => state % MIB,
                        2 => 5 * MIB - 1 + state % 3,
                        3 => state % (12 * MIB),
                        _ => 19 * MIB + state % (30 * MIB),
                    }
                })
                .collect();
            let pieces = plan_pieces(&sizes, limits());
            check(&sizes, &pieces, limits());
            // Bytes read here stay below one part per upload piece.
            for piece in &pieces {
                if let Piece::Upload(_) = piece {
                    assert!(piece.len() <= limits().min_part);
                }
            }
        }
    }

    #[test]
    fn groups_respect_the_part_count() {
        let sizes = vec![6 * MIB; 25];
        let groups = group_pieces(plan_pieces(&sizes, limits()), 10);
        assert_eq!(
            groups.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
    }
}
