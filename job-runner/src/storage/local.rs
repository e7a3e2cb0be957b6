//! Local folders: listing, reading, and durable, atomic writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc::Sender;

use super::{Listed, Location, is_image_name, is_visible};
use crate::error::{Error, Result};
use crate::imaging;
use crate::work::Skipped;

/// Maps an I/O error on `path` to one that says what to do.
pub(super) fn error(path: &Path, err: std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            uri: path.display().to_string(),
            hint: String::new(),
        },
        std::io::ErrorKind::PermissionDenied => Error::ObjectRefused {
            uri: path.display().to_string(),
            reason: "permission denied".into(),
            hint: "check its permissions and the user fruitpipe runs as".into(),
            denied: true,
        },
        std::io::ErrorKind::IsADirectory => Error::Input(format!(
            "{} is a folder where a file was expected; give the path of the file",
            path.display()
        )),
        _ => Error::io(path, err),
    }
}

/// Lists the photos under `root` in byte order of their paths (the order an S3 listing of
/// the same tree has), and every input that looks like one but cannot be read as a file:
/// a symbolic link loop or one whose target is missing, a FIFO, a socket or a device, a
/// folder that cannot be opened, a name that is not UTF-8. Those are reported as
/// [`Listed::Skipped`], so they reach `errors.csv` instead of stopping or hanging the run.
pub(super) fn list(root: &Path, tx: &Sender<Result<Listed>>) {
    if !root.is_dir() {
        let _ = tx.blocking_send(Err(Error::NotFound {
            uri: root.display().to_string(),
            hint: " (or is not a folder); check --input".into(),
        }));
        return;
    }
    // Folders sort as if their name ended in '/', so the walk visits paths in the same
    // byte order as an S3 listing of the same tree: shards come out identical.
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_key(|entry| {
            let mut key = entry.file_name().as_encoded_bytes().to_vec();
            if entry.file_type().is_dir() {
                key.push(b'/');
            }
            key
        });
    for entry in walker {
        let item = match entry {
            Ok(entry) => listed_entry(root, &entry),
            Err(err) => listed_error(root, err),
        };
        if let Some(item) = item
            && tx.blocking_send(item).is_err()
        {
            return;
        }
    }
}

fn relative_to(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative.to_string_lossy().replace('\\', "/")
}

fn skipped(path: &Path, reason: impl Into<String>) -> Option<Result<Listed>> {
    Some(Ok(Listed::Skipped(Skipped {
        path: path.to_string_lossy().into_owned(),
        reason: reason.into(),
    })))
}

fn listed_entry(root: &Path, entry: &walkdir::DirEntry) -> Option<Result<Listed>> {
    let kind = entry.file_type();
    if kind.is_dir() {
        return None;
    }
    let relative = relative_to(root, entry.path());
    let name = entry.file_name().to_string_lossy();
    if !is_visible(&relative) || !is_image_name(&name) {
        return None;
    }
    let path = entry.path();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a file"
        };
        return skipped(path, format!("not a regular file: {what}"));
    }
    if path.to_str().is_none() {
        return skipped(
            path,
            "the path is not valid UTF-8, which the CSV cannot name; rename the file",
        );
    }
    Some(Ok(Listed::Photo(Location::Local(path.to_path_buf()))))
}

/// An entry the walk could not follow: one skipped input when it is under the root,
/// a failure of the whole listing when it is the root itself.
fn listed_error(root: &Path, err: walkdir::Error) -> Option<Result<Listed>> {
    let Some(path) = err.path().map(Path::to_path_buf) else {
        return Some(Err(Error::Input(format!(
            "cannot list {}: {err}",
            root.display()
        ))));
    };
    if path == root {
        let io = err
            .into_io_error()
            .unwrap_or_else(|| std::io::Error::other("walk failed"));
        return Some(Err(error(&path, io)));
    }
    let relative = relative_to(root, &path);
    if !is_visible(&relative) {
        return None;
    }
    if let Some(ancestor) = err.loop_ancestor() {
        return skipped(
            &path,
            format!(
                "a symbolic link loop (it leads back to {}); remove or fix the link",
                ancestor.display()
            ),
        );
    }
    let is_link = path
        .symlink_metadata()
        .is_ok_and(|meta| meta.file_type().is_symlink());
    let io = err.io_error().map(std::io::Error::kind);
    match io {
        Some(std::io::ErrorKind::NotFound) if is_link => {
            if is_image_name(&relative) || !relative.contains('.') {
                skipped(
                    &path,
                    "a symbolic link whose target does not exist; fix or remove the link",
                )
            } else {
                None
            }
        }
        // Deleted while the walk ran: as a listing taken a moment later would.
        Some(std::io::ErrorKind::NotFound) => None,
        _ => skipped(&path, format!("cannot be read: {err}")),
    }
}

/// The whole content of a file.
pub(super) fn read(path: &Path) -> Result<Bytes> {
    let (mut file, size) = open_regular(path)?;
    let mut data = Vec::with_capacity(size as usize);
    file.read_to_end(&mut data)
        .map_err(|err| error(path, err))?;
    Ok(Bytes::from(data))
}

/// A photo's bytes, refused before they are read when the file is larger than `max_bytes`
/// or does not start like a JPEG or PNG.
pub(super) fn read_photo(path: &Path, max_bytes: u64) -> Result<Bytes> {
    let (mut file, size) = open_regular(path)?;
    let uri = path.display().to_string();
    super::check_photo_size(&uri, size, max_bytes)?;
    let mut data = Vec::with_capacity(size as usize);
    let mut head = [0u8; imaging::SIGNATURE_BYTES];
    let read = read_up_to(&mut file, &mut head).map_err(|err| error(path, err))?;
    data.extend_from_slice(&head[..read]);
    super::check_photo_signature(&uri, &data)?;
    file.read_to_end(&mut data)
        .map_err(|err| error(path, err))?;
    Ok(Bytes::from(data))
}

fn read_up_to(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Opens `path` for reading only if it is a regular file. O_NONBLOCK keeps the open of a
/// FIFO from waiting forever for a writer; it changes nothing for regular files.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => Error::ObjectRefused {
                uri: path.display().to_string(),
                reason: "a symbolic link loop".into(),
                hint: "remove or fix the link".into(),
                denied: false,
            },
            _ => error(path, err),
        })?;
    let metadata = file.metadata().map_err(|err| error(path, err))?;
    if metadata.is_dir() {
        return Err(error(path, std::io::ErrorKind::IsADirectory.into()));
    }
    if !metadata.is_file() {
        return Err(Error::ObjectRefused {
            uri: path.display().to_string(),
            reason: "not a regular file (a FIFO, socket or device)".into(),
            hint: "give a regular file".into(),
            denied: false,
        });
    }
    Ok((file, metadata.len()))
}

/// Temporary names are unique within a process by this counter, across processes by the
/// process id.
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// A file written under a hidden temporary name in its final folder, then made durable and
/// renamed over the final name: readers see the old file or the new one, never a part,
/// even after a crash or a power loss. The file gets the permissions any new file gets
/// (0644 under the usual umask). Dropped without [`AtomicFile::commit`], it is removed.
pub(super) struct AtomicFile {
    path: PathBuf,
    temporary: PathBuf,
    file: Option<std::io::BufWriter<File>>,
}

impl AtomicFile {
    pub(super) fn create(path: &Path) -> Result<AtomicFile> {
        let dir = parent(path);
        std::fs::create_dir_all(dir).map_err(|err| error(dir, err))?;
        remove_abandoned_temporaries(path);
        let temporary = temporary_name(path, std::process::id());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|err| error(&temporary, err))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            temporary,
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub(super) fn write(&mut self, data: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("written after commit");
        file.write_all(data)
            .map_err(|err| error(&self.temporary, err))
    }

    pub(super) fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("committed twice");
        let file = file
            .into_inner()
            .map_err(|err| error(&self.temporary, err.into_error()))?;
        file.sync_all().map_err(|err| error(&self.temporary, err))?;
        drop(file);
        std::fs::rename(&self.temporary, &self.path).map_err(|err| error(&self.path, err))?;
        // The rename itself is durable only once the folder is.
        let dir = parent(&self.path);
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| error(dir, err))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `.features_pca.csv.tmp-<pid>-<n>`.
fn temporary_name(path: &Path, pid: u32) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let n = TEMPORARIES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{pid}-{n}"))
}

/// Removes the temporaries of `path` that a killed process left: those whose process no
/// longer runs. A live writer's temporary is never touched.
fn remove_abandoned_temporaries(path: &Path) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(parent(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_runs(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn process_runs(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing.
    let answer = unsafe { libc::kill(pid as libc::pid_t, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Writes `data` whole at `path` ([`AtomicFile`]).
pub(super) fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write(data)?;
    file.commit()
}

/// Removes a file; one that is already gone is fine.
pub(super) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(error(path, err)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_files_get_the_usual_permissions_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/features_pca.csv");
        write_atomically(&path, b"a,b\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a,b\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let umask = {
            // SAFETY: umask is set back at once; tests of this module do not race on it.
            let old = unsafe { libc::umask(0o022) };
            unsafe { libc::umask(old) };
            old as u32
        };
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}");

        let abandoned = AtomicFile::create(&path).unwrap();
        drop(abandoned);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["features_pca.csv"]);
    }

    #[test]
    fn writers_of_one_path_never_share_a_temporary_and_readers_see_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features_pca.csv");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 1 << 20]).collect();
        std::thread::scope(|scope| {
            for data in &contents {
                let path = &path;
                scope.spawn(move || write_atomically(path, data).unwrap());
            }
        });
        let result = std::fs::read(&path).unwrap();
        assert!(contents.contains(&result), "a mix of two writes");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporaries left: {names:?}");
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features_pca.csv");
        // A pid above the kernel's maximum (4,194,304) never runs.
        let dead = temporary_name(&path, 4_194_305);
        std::fs::write(&dead, "left by a killed run").unwrap();
        let live = temporary_name(&path, 1);
        std::fs::write(&live, "pid 1 always runs").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.jpg");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let err = read_photo(&fifo, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(err.photo_problem().is_some());
    }

    #[test]
    fn photos_are_checked_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.jpg");
        File::create(&big).unwrap().set_len(3 << 30).unwrap();
        let err = read_photo(&big, 64 << 20).unwrap_err();
        assert!(err.to_string().contains("--max-photo-bytes"), "{err}");
        let text = dir.path().join("notes.jpg");
        std::fs::write(&text, "not a photo at all").unwrap();
        let err = read_photo(&text, 64 << 20).unwrap_err();
        assert!(err.to_string().contains("not a supported image"), "{err}");
    }
}
