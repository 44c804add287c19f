//! The progress bar: on stderr, and only when stderr is a terminal, so that logs and CI output
//! stay clean. The counts it shows are the run's own; it only displays them.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// Starts a stage counting `unit`s: a bar with an ETA when the total is known, else a spinner.
    pub fn stage(&self, unit: &'static str, total: Option<u64>) {
        self.bar.set_prefix(unit);
        self.bar.set_position(0);
        let style = match total {
            Some(total) => {
                self.bar.set_length(total);
                ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {prefix}, eta {eta}\n{msg}")
            }
            None => ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} {prefix}\n{msg}"),
        };
        if let Ok(style) = style {
            self.bar.set_style(style);
        }
    }

    pub fn advance(&self, users: u64) {
        self.bar.inc(users);
    }

    /// The counts line under the bar.
    pub fn show(&self, message: String) {
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
