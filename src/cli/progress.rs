//! Progress of long CLI work, for people: a bar on a terminal (`indicatif`),
//! and on anything else (logs, CI) a plain line at each quarter of the work,
//! only when there is enough work for that to matter. All of it on stderr,
//! so stdout stays what scripts read.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this much work, a non-terminal gets no progress lines.
const PLAIN_LINES_FROM: u64 = 10_000;

pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    /// The next quarter (1..=4) a plain line is due at.
    next_quarter: u64,
}

impl Progress {
    /// Work of `total` units (records, examples), named `label` ("verifying").
    pub fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label);
            bar
        });
        Self {
            bar,
            label,
            total,
            next_quarter: 1,
        }
    }

    /// `done` units are finished.
    pub fn set(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.total < PLAIN_LINES_FROM {
            return;
        }
        for quarter in quarters_reached(self.total, done, &mut self.next_quarter) {
            eprintln!("{}: {done}/{} ({}%)", self.label, self.total, quarter * 25);
        }
    }
}

/// The quarters of `total` that `done` reached and were not reported yet.
fn quarters_reached(total: u64, done: u64, next_quarter: &mut u64) -> Vec<u64> {
    let mut reached = Vec::new();
    while *next_quarter <= 4 && done.saturating_mul(4) >= total.saturating_mul(*next_quarter) {
        reached.push(*next_quarter);
        *next_quarter += 1;
    }
    reached
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quarters_reached;

    #[test]
    fn each_quarter_is_reported_once_in_order() {
        let mut next = 1;
        assert!(quarters_reached(20_000, 0, &mut next).is_empty());
        assert!(quarters_reached(20_000, 4_999, &mut next).is_empty());
        assert_eq!(quarters_reached(20_000, 5_000, &mut next), vec![1]);
        assert!(quarters_reached(20_000, 6_000, &mut next).is_empty());
        // A big step reports every quarter it crossed.
        assert_eq!(quarters_reached(20_000, 20_000, &mut next), vec![2, 3, 4]);
        assert!(quarters_reached(20_000, 20_000, &mut next).is_empty());
    }
}
