//! `report.html`: one page a person can open from the bucket or attach to a ticket. It is
//! self-contained (the figures are inline PNGs; no script, stylesheet or font is fetched),
//! so it shows the same offline, from S3 or from a mail.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::imaging::Preprocessing;
use crate::model::ModelInfo;
use crate::output::Summary;
use crate::work::Skipped;

/// Skipped photos listed in the page; `errors.csv` has all of them.
pub const SKIPPED_SHOWN: usize = 500;

/// What the page shows.
pub struct Report<'a> {
    pub summary: &'a Summary,
    pub feature_model: Option<&'a ModelInfo>,
    /// The `--variance` threshold `k` was chosen by, if it was.
    pub threshold: Option<f64>,
    /// The first skipped photos (at most [`SKIPPED_SHOWN`]); the summary has their number.
    pub skipped: &'a [Skipped],
    pub scree_png: &'a [u8],
    pub scatter_png: &'a [u8],
    /// Photos in the scatter.
    pub sampled: usize,
}

impl Report<'_> {
    pub fn to_html(&self) -> String {
        let mut page = String::with_capacity(self.scree_png.len() * 2 + 64 * 1024);
        page.push_str(HEAD);
        self.write_summary(&mut page);
        self.write_figures(&mut page);
        self.write_skipped(&mut page);
        self.write_model(&mut page);
        self.write_outputs(&mut page);
        page.push_str("</main>\n</body>\n</html>\n");
        page
    }

    fn write_summary(&self, page: &mut String) {
        let s = self.summary;
        let choice = match self.threshold {
            Some(threshold) => {
                format!("the fewest reaching {} of the variance", percent(threshold))
            }
            None => "as many as asked for (--components)".to_string(),
        };
        let _ = write!(
            page,
            "<header><h1>fruitpipe report</h1><p class=\"route\">{} &rarr; {}</p></header>\n<main>\n",
            escape(&s.input),
            escape(&s.output)
        );
        page.push_str("<section id=\"summary\"><h2>Summary</h2><table class=\"facts\">\n");
        let rows = [
            ("Photos found", count(s.images_seen)),
            ("Photos used", count(s.images_used)),
            ("Photos skipped", count(s.images_skipped)),
            ("Shards", count(s.shards as u64)),
            ("Features per photo", count(s.dim as u64)),
            ("Components kept (k)", format!("{} ({choice})", s.k)),
            (
                "Variance explained",
                percent(s.cumulative_explained_variance),
            ),
            (
                "Scaling",
                format!(
                    "{}; {}",
                    if s.standardize {
                        "standardized features (correlation PCA)"
                    } else {
                        "centred features (covariance PCA)"
                    },
                    if s.whiten {
                        "whitened components"
                    } else {
                        "components not whitened"
                    }
                ),
            ),
            (
                "Extraction speed",
                format!("{:.1} photos/s per pod", s.images_per_second),
            ),
        ];
        fact_rows(page, rows);
        page.push_str("</table>\n<h3>Time per phase</h3><table class=\"phases\">\n");
        page.push_str("<tr><th>phase</th><th>seconds</th></tr>\n");
        let t = &s.seconds;
        for (phase, seconds) in [
            ("plan", t.plan),
            ("extract (sum over shards)", t.extract),
            ("fit", t.fit),
            ("project (sum over shards)", t.project),
            ("assemble", t.assemble),
        ] {
            let _ = writeln!(
                page,
                "<tr><td>{phase}</td><td>{}</td></tr>",
                seconds_text(seconds)
            );
        }
        page.push_str("</table></section>\n");
    }

    fn write_figures(&self, page: &mut String) {
        page.push_str("<section id=\"figures\"><h2>Figures</h2>\n");
        let scree_caption = format!(
            "Each component's share of the variance (left, log scale) and the cumulative share (right). The first {} components are kept.",
            self.summary.k
        );
        let scatter_caption = format!(
            "The first two components of {} photos (a sample that depends only on their paths), coloured by label.",
            count(self.sampled as u64)
        );
        figure(page, "scree", self.scree_png, &scree_caption);
        figure(page, "scatter", self.scatter_png, &scatter_caption);
        page.push_str("</section>\n");
    }

    fn write_skipped(&self, page: &mut String) {
        let _ = writeln!(
            page,
            "<section id=\"skipped\"><h2>Skipped photos ({})</h2>",
            count(self.summary.images_skipped)
        );
        if self.skipped.is_empty() {
            page.push_str("<p>None: every photo found was used.</p></section>\n");
            return;
        }
        page.push_str("<table class=\"skipped\"><tr><th>path</th><th>reason</th></tr>\n");
        for item in self.skipped {
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                escape(&item.path),
                escape(&item.reason)
            );
        }
        page.push_str("</table>\n");
        let shown = self.skipped.len() as u64;
        if self.summary.images_skipped > shown {
            let _ = writeln!(
                page,
                "<p>&hellip; and {} more: <code>errors.csv</code> lists them all.</p>",
                count(self.summary.images_skipped - shown)
            );
        }
        page.push_str("</section>\n");
    }

    fn write_model(&self, page: &mut String) {
        page.push_str("<section id=\"model\"><h2>Model and preprocessing</h2>\n");
        let Some(model) = self.feature_model else {
            page.push_str("<p>Not recorded by the fit that made this run: see <code>pca_model.json</code>.</p></section>\n");
            return;
        };
        page.push_str("<table class=\"facts\">\n");
        let rows = [
            ("Model", model.uri.clone()),
            ("sha256", model.sha256.clone()),
            (
                "Tensors",
                format!("input {}, output {}", model.input, model.output),
            ),
            ("Features", model.dim.to_string()),
            ("Preprocessing", preprocessing(&model.preprocessing)),
        ];
        fact_rows(page, rows);
        page.push_str("</table></section>\n");
    }

    fn write_outputs(&self, page: &mut String) {
        let o = &self.summary.outputs;
        page.push_str("<section id=\"outputs\"><h2>Outputs</h2><ul>\n");
        let mut items = vec![
            ("principal components (CSV)", &o.features),
            ("PCA model", &o.model),
            ("summary", &o.summary),
            ("skipped photos", &o.errors),
        ];
        if let Some(parquet) = &o.parquet {
            items.push(("principal components (Parquet dataset)", parquet));
        }
        for (what, uri) in items {
            let _ = writeln!(page, "<li>{what}: <code>{}</code></li>", escape(uri));
        }
        page.push_str("</ul></section>\n");
    }
}

/// `<tr><th>name</th><td>value</td></tr>` rows; the values are escaped.
fn fact_rows<const N: usize>(page: &mut String, rows: [(&str, String); N]) {
    for (name, value) in rows {
        let _ = writeln!(page, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
}

fn figure(page: &mut String, id: &str, png: &[u8], caption: &str) {
    let _ = writeln!(
        page,
        "<figure id=\"{id}\"><img alt=\"{caption}\" src=\"data:image/png;base64,{}\"><figcaption>{caption}</figcaption></figure>",
        base64::engine::general_purpose::STANDARD.encode(png),
        caption = escape(caption)
    );
}

fn preprocessing(p: &Preprocessing) -> String {
    let preset = match p.preset {
        crate::imaging::Preset::Lite => "lite: (x - 127) / 128",
        crate::imaging::Preset::Torch => "torch: x / 255, ImageNet mean and deviation",
        crate::imaging::Preset::Tf => "tf: x / 127.5 - 1",
        crate::imaging::Preset::Caffe => "caffe: BGR, ImageNet mean subtracted",
    };
    let layout = match p.layout {
        crate::imaging::Layout::Nchw => "NCHW",
        crate::imaging::Layout::Nhwc => "NHWC",
    };
    format!(
        "{preset}; resized to {size}x{size}, {layout}; EXIF orientation {exif}",
        size = p.size,
        exif = if p.exif_orientation {
            "applied"
        } else {
            "ignored"
        }
    )
}

/// Two decimals under 10 s, where they matter; one above.
fn seconds_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2}")
    } else {
        format!("{seconds:.1}")
    }
}

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// `64,123`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Text for HTML content and quoted attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fruitpipe report</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #2f6b3a; color: white; padding: 1.2rem 2rem; }
header h1 { margin: 0; font-size: 1.6rem; }
.route { margin: 0.3rem 0 0; font-family: ui-monospace, monospace; font-size: 0.9rem; word-break: break-all; }
main { max-width: 1060px; margin: 0 auto; padding: 1rem 2rem 3rem; }
section { background: white; border-radius: 8px; padding: 0.5rem 1.5rem 1rem; margin: 1rem 0; box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.25rem 1rem 0.25rem 0; vertical-align: top; }
.facts th { font-weight: 600; white-space: nowrap; }
.phases td:last-child { text-align: right; font-variant-numeric: tabular-nums; }
.skipped { font-size: 0.9rem; }
.skipped td:first-child { word-break: break-all; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #dde; }
figcaption { color: #556; font-size: 0.9rem; }
code { font-family: ui-monospace, monospace; word-break: break-all; }
</style>
</head>
<body>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(64123), "64,123");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn markup_in_paths_and_reasons_is_text() {
        assert_eq!(
            escape("<img src=x onerror='a&b'>\""),
            "&lt;img src=x onerror=&#39;a&amp;b&#39;&gt;&quot;"
        );
    }
}
