//! Progress of a long offline run, shared by the tools.
//!
//! A tool reports how many bytes of how many it has read through [`Progress`]; it knows
//! nothing of terminals. The binary passes a [`StderrProgress`]: a bar on a terminal, a plain
//! line every few seconds otherwise (a log file, a pipe), and nothing for a run shorter than
//! that.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Where a tool reports its progress.
pub trait Progress {
    /// `done` of `total` bytes are processed; `stage` names what is being read. Called often
    /// (every few MiB at most); an implementation decides how often to show it.
    fn update(&mut self, stage: &str, done: u64, total: u64);

    /// The work is over, whether it succeeded or not.
    fn finish(&mut self) {}
}

/// Shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&mut self, _stage: &str, _done: u64, _total: u64) {}
}

/// Progress on standard error: an indicatif bar on a terminal, otherwise one plain line per
/// interval.
pub struct StderrProgress {
    label: String,
    started: Instant,
    shown: Shown,
}

enum Shown {
    /// Drawn from the first update on, once the total is known.
    Bar(Option<indicatif::ProgressBar>),
    Lines {
        every: Duration,
        /// When the last line was printed, if one was.
        last: Option<Instant>,
        done: u64,
        total: u64,
    },
}

/// Interval of the plain progress lines.
pub const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl StderrProgress {
    /// A bar when standard error is a terminal, plain lines every [`LINE_INTERVAL`] otherwise.
    /// `label` starts every line (the tool's name).
    pub fn new(label: &str) -> StderrProgress {
        if std::io::stderr().is_terminal() {
            StderrProgress::bar(label)
        } else {
            StderrProgress::lines(label, LINE_INTERVAL)
        }
    }

    /// A progress bar, drawn on standard error.
    pub fn bar(label: &str) -> StderrProgress {
        StderrProgress {
            label: label.to_string(),
            started: Instant::now(),
            shown: Shown::Bar(None),
        }
    }

    /// A plain line on standard error at most once per `every`, the first after `every`.
    pub fn lines(label: &str, every: Duration) -> StderrProgress {
        StderrProgress {
            label: label.to_string(),
            started: Instant::now(),
            shown: Shown::Lines {
                every,
                last: None,
                done: 0,
                total: 0,
            },
        }
    }
}

impl Progress for StderrProgress {
    fn update(&mut self, stage: &str, done: u64, total: u64) {
        match &mut self.shown {
            Shown::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| new_bar(&self.label, stage, total));
                if bar.length() != Some(total) {
                    bar.set_length(total);
                }
                if bar.message() != stage {
                    bar.set_message(stage.to_string());
                }
                bar.set_position(done);
            }
            Shown::Lines {
                every,
                last,
                done: d,
                total: t,
            } => {
                (*d, *t) = (done, total);
                let since = last.unwrap_or(self.started);
                if since.elapsed() >= *every {
                    *last = Some(Instant::now());
                    let line = format!(
                        "{}: {stage}: {} of {} ({}%)",
                        self.label,
                        human_bytes(done),
                        human_bytes(total),
                        percent(done, total)
                    );
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    fn finish(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        match &mut self.shown {
            Shown::Bar(bar) => {
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
            }
            // A closing line only when progress lines were shown: a short run stays quiet.
            Shown::Lines { last, done, .. } if last.is_some() => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: done: {} in {elapsed:.1} s",
                    self.label,
                    human_bytes(*done)
                );
            }
            Shown::Lines { .. } => {}
        }
    }
}

fn new_bar(label: &str, stage: &str, total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::hidden(),
    );
    let template = "{prefix} {msg:<10} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})";
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar.set_message(stage.to_string());
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        u64::try_from(u128::from(done.min(total)) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// `1536` as `1.5 KiB`: byte counts for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("EiB"))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn percent_never_divides_by_zero_or_passes_100() {
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(5, 10), 50);
        assert_eq!(percent(20, 10), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn plain_lines_stay_quiet_before_the_interval() {
        let mut p = StderrProgress::lines("t", Duration::from_secs(3600));
        p.update("segments", 1, 2);
        let Shown::Lines {
            last, done, total, ..
        } = &p.shown
        else {
            panic!("lines expected");
        };
        assert!(last.is_none());
        assert_eq!((*done, *total), (1, 2));
        p.finish();
    }

    #[test]
    fn plain_lines_are_printed_once_the_interval_has_passed() {
        let mut p = StderrProgress::lines("t", Duration::ZERO);
        p.update("segments", 1, 2);
        let Shown::Lines { last, .. } = &p.shown else {
            panic!("lines expected");
        };
        assert!(last.is_some());
        p.finish();
    }
}
