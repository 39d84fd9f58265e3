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

    /// Work of a few long steps (migrations, gates): on a terminal a bar
    /// naming the current step; elsewhere one line per step, since each
    /// one can take a while.
    pub fn steps(label: &'static str, total: u64) -> Self {
        let mut progress = Self::new(label, total);
        if let Some(bar) = &progress.bar
            && let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
            bar.set_prefix(label);
            bar.set_message("");
        }
        // Plain lines come from `step`, not from quarters.
        progress.next_quarter = 5;
        progress
    }

    /// Work of unknown length (a command's output so far): a spinner with
    /// the latest news on a terminal; elsewhere a line per `step`.
    pub fn open_ended(label: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})")
            {
                bar.set_style(style);
            }
            bar.set_prefix(label);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            label,
            total: 0,
            next_quarter: 5,
        }
    }

    /// Whether this shows a bar (stderr is a terminal) rather than lines.
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Step `done` of the total is finished, and `what` comes next (or just ended).
    pub fn step(&mut self, done: u64, what: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(what.to_string());
            }
            None if self.total == 0 => eprintln!("{}: {what}", self.label),
            None => eprintln!("{}: {done}/{} {what}", self.label, self.total),
        }
    }

    /// As `step`, but without a plain line: only a bar moves.
    pub fn tick(&mut self, done: u64, what: &str) {
        if self.bar.is_some() {
            self.step(done, what);
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
