//! Progress of a phase: a bar on a terminal, else a log line at a steady interval and at
//! each shard's end, so that `kubectl logs -f` of a pod or a CI log shows the work moving.
//! The lines go through `tracing`, so `--log-format json` makes them JSON.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a phase logs its progress when stderr is not a terminal, unless told.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Where progress goes.
#[derive(Clone, Copy, Debug)]
pub enum Display {
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A log line every `interval`, and at each shard's end.
    Lines { interval: Duration },
}

impl Display {
    /// A bar on a terminal, else lines every `interval`.
    pub fn for_stderr(interval: Duration) -> Display {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Display::Bar
        } else {
            Display::Lines { interval }
        }
    }
}

/// One phase's progress. The phases count on [`Progress::bar`]; dropping it stops the
/// periodic lines.
pub struct Progress {
    phase: &'static str,
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `total` photos when known (a bar or a line then shows the share and the ETA).
    /// Needs a tokio runtime for the periodic lines.
    pub fn start(
        phase: &'static str,
        total: Option<u64>,
        display: Display,
        template: &str,
    ) -> Progress {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::no_length(),
        };
        let mut ticker = None;
        match display {
            Display::Bar => {
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .expect("valid progress template")
                        .progress_chars("=> "),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            Display::Lines { interval } => {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                let counted = bar.clone();
                ticker = Some(tokio::spawn(async move {
                    let mut every = tokio::time::interval(interval);
                    every.tick().await;
                    loop {
                        every.tick().await;
                        log_line(phase, &counted, None);
                    }
                }));
            }
        }
        Progress { phase, bar, ticker }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Logs a line for the end of shard `shard` (only when showing lines).
    pub fn shard_done(&self, shard: usize) {
        if self.ticker.is_some() {
            log_line(self.phase, &self.bar, Some(shard));
        }
    }

    /// Clears a bar; stops the periodic lines.
    pub fn finish(self) {
        if self.ticker.is_none() {
            self.bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}

/// `extract: 1200/5000 photos (24%), 201.3 photos/s, ETA 19 s`, with the numbers as fields.
fn log_line(phase: &'static str, bar: &ProgressBar, shard: Option<usize>) {
    let done = bar.position();
    let total = bar.length();
    let elapsed = bar.elapsed().as_secs_f64();
    let per_second = if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    let eta_seconds = match total {
        Some(total) if per_second > 0.0 => Some((total.saturating_sub(done)) as f64 / per_second),
        _ => None,
    };
    let mut message = format!("{phase}: {done}");
    if let Some(total) = total {
        let share = (100 * done).checked_div(total).unwrap_or(100);
        message.push_str(&format!("/{total} photos ({share}%)"));
    } else {
        message.push_str(" photos");
    }
    message.push_str(&format!(", {per_second:.1} photos/s"));
    if let Some(eta) = eta_seconds {
        message.push_str(&format!(", ETA {eta:.0} s"));
    }
    if let Some(shard) = shard {
        message.push_str(&format!(" (shard {shard} done)"));
    }
    tracing::info!(
        target: "fruitpipe_runner::progress",
        phase,
        done,
        total,
        per_second,
        eta_seconds,
        shard,
        "{message}"
    );
}
