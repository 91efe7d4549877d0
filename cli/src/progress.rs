//! Progress for long work: a bar on a terminal, plain periodic lines otherwise (logs, pipes, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often plain progress lines are printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Progress of one command, written to stderr.
pub struct Progress {
    command: &'static str,
    bar: Option<ProgressBar>,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    /// A bar counting to `total` (a spinner when unknown) on a terminal; plain lines otherwise.
    /// `KPL_PROGRESS=plain` asks for plain lines on a terminal too.
    pub fn new(command: &'static str, total: Option<u64>) -> Progress {
        Progress::every(command, total, PLAIN_EVERY)
    }

    /// As [`new`](Self::new), with plain lines at most once every `every` (a long-running
    /// follower should not fill its log with progress).
    pub fn every(command: &'static str, total: Option<u64>, every: Duration) -> Progress {
        let plain = std::env::var("KPL_PROGRESS").is_ok_and(|v| v == "plain");
        let bar = (!plain && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta}) {wide_msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{prefix} {spinner} {pos} ({elapsed}) {wide_msg}")
                        .expect("a valid template"),
                ),
            };
            bar.set_prefix(format!("kpl {command}"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            command,
            bar,
            last_line: Instant::now(),
            every,
        }
    }

    /// Reports `position` units done and a short status; on a non-terminal at most one line
    /// every two seconds (or as set by [`every`](Self::every)).
    pub fn update(&mut self, position: u64, status: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.set_message(status());
            }
            None if self.last_line.elapsed() >= self.every => {
                self.last_line = Instant::now();
                eprintln!("kpl {}: {}", self.command, status());
            }
            None => {}
        }
    }

    /// A line that must not be lost under the bar (a warning, a failure).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar, before the summary is printed.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
