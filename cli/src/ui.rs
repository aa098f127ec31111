//! Output: aligned tables, JSON, progress bars, the confirmation prompt; and the small parsers the
//! commands share (times, rates).

use crate::error::{CliError, Result};
use indicatif::{ProgressBar, ProgressStyle};
use kyc_relay::archive::Utc;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

/// How the command talks to the operator.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub json: bool,
    pub yes: bool,
    /// Progress bars are drawn only for a person: stderr is a terminal and the output is not JSON.
    pub progress: bool,
}

impl Ui {
    pub fn new(json: bool, yes: bool) -> Self {
        Self {
            json,
            yes,
            progress: !json && std::io::stderr().is_terminal(),
        }
    }

    /// A progress bar over `len` items (a spinner when the total is unknown); hidden when no
    /// person is watching.
    pub fn bar(&self, len: Option<u64>, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {pos} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Asks before a destructive operation. `--yes` skips the question; without a terminal on stdin
    /// and without `--yes` the answer is no (a script must say yes explicitly).
    pub fn confirm(&self, question: &str) -> Result<()> {
        if self.yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(CliError::not_confirmed(format!(
                "{question}: not confirmed (stdin is not a terminal; pass --yes)"
            )));
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::failed(format!("cannot read the answer: {e}")))?;
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok(()),
            _ => Err(CliError::not_confirmed("not confirmed: nothing was done")),
        }
    }
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// A table with aligned columns (widths in characters).
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, cell) in cells.iter().enumerate().take(n) {
                if i + 1 == n {
                    l.push_str(cell);
                } else {
                    l.push_str(cell);
                    l.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            line(row);
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A time as RFC 3339 (UTC, to the second); "-" for none.
pub fn time(ms: u64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        Utc::rfc3339(ms)
    }
}

/// A duration in the largest sensible units: 42s, 3m12s, 5h03m, 2d04h.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `--since/--until`: RFC 3339 (`2026-12-01T10:00:00Z`), a date (`2026-12-01`, midnight UTC), or an
/// age before now (`30s`, `90m`, `2h`, `7d`).
pub fn parse_time(flag: &str, s: &str, now_ms: u64) -> Result<u64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c))
        && let Ok(n) = s[..s.len() - 1].parse::<u64>()
    {
        let secs = n.saturating_mul(match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        });
        return Ok(now_ms.saturating_sub(secs.saturating_mul(1000)));
    }
    Utc::parse_rfc3339(s).ok_or_else(|| {
        CliError::usage(format!(
            "{flag} {s:?}: use RFC 3339 (2026-12-01T10:00:00Z), a date (2026-12-01) or an age (30m, 2h, 7d)"
        ))
    })
}

/// Whether a `--since/--until` value is relative to now (so a re-run means another range).
pub fn is_relative_time(s: &str) -> bool {
    let s = s.trim();
    s == "now" || Utc::parse_rfc3339(s).is_none()
}

/// A `[since, until)` range from two optional flags; `until` must be later than `since`.
pub fn time_range(
    since: Option<&str>,
    until: Option<&str>,
    now_ms: u64,
) -> Result<(Option<u64>, Option<u64>)> {
    let since = since
        .map(|s| parse_time("--since", s, now_ms))
        .transpose()?;
    let until = until
        .map(|s| parse_time("--until", s, now_ms))
        .transpose()?;
    if let (Some(a), Some(b)) = (since, until)
        && b <= a
    {
        return Err(CliError::usage(format!(
            "--until ({}) must be later than --since ({})",
            time(b),
            time(a)
        )));
    }
    Ok((since, until))
}

/// A rate limit: `N/s`, `N/m` or `N` (per second), at most 1000/s.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    interval: Duration,
}

impl Rate {
    pub fn parse(flag: &str, s: &str) -> Result<Self> {
        let (n, per) = match s.trim().split_once('/') {
            Some((n, "s")) => (n, 1.0),
            Some((n, "m")) => (n, 60.0),
            None => (s.trim(), 1.0),
            Some(_) => {
                return Err(CliError::usage(format!(
                    "{flag} {s:?}: use N/s, N/m or N (per second)"
                )));
            }
        };
        let n: f64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)
            .ok_or_else(|| {
                CliError::usage(format!("{flag} {s:?}: the count must be a positive number"))
            })?;
        let per_sec = n / per;
        if per_sec > 1000.0 {
            return Err(CliError::usage(format!("{flag} {s:?}: at most 1000/s")));
        }
        Ok(Self {
            interval: Duration::from_secs_f64(1.0 / per_sec),
        })
    }

    pub fn per_sec(self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }

    pub fn limiter(self) -> Limiter {
        Limiter {
            interval: self.interval,
            next: None,
        }
    }
}

/// Spaces operations at the rate's interval (the first one goes at once).
pub struct Limiter {
    interval: Duration,
    next: Option<tokio::time::Instant>,
}

impl Limiter {
    pub async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        let at = self.next.unwrap_or(now).max(now);
        tokio::time::sleep_until(at).await;
        self.next = Some(at + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let mut t = Table::new(&["A", "LONG HEADER", "C"]);
        t.row(vec!["wide cell".into(), "x".into(), "last".into()]);
        assert_eq!(
            t.render(),
            "A          LONG HEADER  C\nwide cell  x            last\n"
        );
    }

    #[test]
    fn times_and_rates_parse_or_say_why_not() {
        let now = 1_796_161_635_000;
        assert_eq!(
            parse_time("--since", "2026-12-01T21:47:15Z", now).unwrap(),
            now
        );
        assert_eq!(parse_time("--since", "2h", now).unwrap(), now - 7_200_000);
        assert!(is_relative_time("2h") && !is_relative_time("2026-12-01"));
        let err = parse_time("--since", "yesterday", now).unwrap_err();
        assert!(err.message.contains("--since \"yesterday\""), "{err}");
        assert!(time_range(Some("1h"), Some("2h"), now).is_err());
        assert_eq!(
            Rate::parse("--rate", "10/s").unwrap().interval.as_millis(),
            100
        );
        assert_eq!(
            Rate::parse("--rate", "60/m").unwrap().interval.as_millis(),
            1000
        );
        assert!(Rate::parse("--rate", "0").is_err());
        assert!(Rate::parse("--rate", "5/h").is_err());
        assert!(Rate::parse("--rate", "5000").is_err());
        assert_eq!(age(3725), "1h02m");
    }
}
