//! The scrape body as the encoder writes it. prometheus-client encodes
//! OpenMetrics; text 0.0.4 is converted on the way (counter families are
//! named with their `_total` suffix, `# UNIT` and `# EOF` go, samples pass
//! through) instead of from a finished OpenMetrics body, and the body can
//! be handed over in chunks as it grows: at 10,000 cgroups a body is about
//! 9 MiB, and holding it whole (twice, for text) was most of the daemon's
//! peak memory.
//!
//! The encoder writes a sample in a dozen pieces of a few bytes. Looking
//! for line ends in each piece made text cost a third more than
//! OpenMetrics at 10,000 cgroups. The pieces go into the body as they are
//! instead; once a batch is in, its whole lines are searched for comment
//! lines in one pass, and only from the first of them on is the batch
//! rewritten (a family's thousands of samples have none).

use std::fmt;

/// How much is written before its whole lines are converted: small enough
/// that the part rewritten stays in the CPU's cache.
const BATCH_BYTES: usize = 32 * 1024;

/// A `fmt::Write` that takes OpenMetrics text and holds the body in the
/// format asked for.
pub struct Exposition {
    out: String,
    /// False: OpenMetrics, passed through.
    to_text: bool,
    /// For text: `out` up to here is converted, and ends a line.
    converted: usize,
    /// A `# HELP` waits for its `# TYPE`, which says the family's name.
    pending_help: Option<String>,
}

impl Exposition {
    pub fn new(openmetrics: bool, capacity: usize) -> Self {
        Self { out: String::with_capacity(capacity), to_text: !openmetrics, converted: 0, pending_help: None }
    }

    /// The body, its last line ended.
    pub fn finish(mut self) -> String {
        if self.to_text && self.converted < self.out.len() {
            if !self.out.ends_with('\n') {
                self.out.push('\n');
            }
            self.convert_whole_lines();
        }
        self.out
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// What is written for good so far (for text, up to the line being
    /// written, which may still be rewritten), leaving room for `capacity`.
    pub fn take_written(&mut self, capacity: usize) -> String {
        let end = if self.to_text {
            self.convert_whole_lines();
            self.converted
        } else {
            self.out.len()
        };
        if end == 0 {
            return String::new();
        }
        let mut rest = String::with_capacity(capacity.max(self.out.len() - end));
        rest.push_str(&self.out[end..]);
        self.out.truncate(end);
        self.converted = 0;
        std::mem::replace(&mut self.out, rest)
    }

    /// Converts what was written since the last call, up to its last
    /// whole line.
    fn convert_whole_lines(&mut self) {
        let unconverted = &self.out.as_bytes()[self.converted..];
        let Some(last_newline) = memchr::memrchr(b'\n', unconverted) else { return };
        let lines = &unconverted[..=last_newline];
        let first_comment = if lines.first() == Some(&b'#') {
            Some(0)
        } else {
            memchr::memmem::find(lines, b"\n#").map(|i| i + 1)
        };
        let lines_end = self.converted + last_newline + 1;
        if let Some(first_comment) = first_comment {
            let rewrite_from = self.converted + first_comment;
            let written = self.out.split_off(rewrite_from);
            let (whole_lines, unfinished) = written.split_at(lines_end - rewrite_from);
            convert_lines(whole_lines, &mut self.out, &mut self.pending_help);
            self.converted = self.out.len();
            self.out.push_str(unfinished);
        } else {
            self.converted = lines_end;
        }
    }
}

impl fmt::Write for Exposition {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.out.push_str(s);
        if self.to_text && self.out.len() - self.converted >= BATCH_BYTES {
            self.convert_whole_lines();
        }
        Ok(())
    }
}

/// Converts whole lines of OpenMetrics text (`om` ends with a newline, or
/// is empty) to text 0.0.4, appending to `out`. A `# HELP` line is held in
/// `pending_help` until its `# TYPE` names the family, which may come in
/// the next batch.
fn convert_lines(om: &str, out: &mut String, pending_help: &mut Option<String>) {
    let mut rest = om;
    while !rest.is_empty() {
        if !rest.starts_with('#') {
            // Samples up to the next comment line, copied as they are.
            let run_end = memchr::memmem::find(rest.as_bytes(), b"\n#").map_or(rest.len(), |i| i + 1);
            out.push_str(&rest[..run_end]);
            rest = &rest[run_end..];
            continue;
        }
        let (line, next) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = next;
        if let Some(help) = line.strip_prefix("# HELP ") {
            *pending_help = Some(help.to_owned());
        } else if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, ty) = ty.split_once(' ').unwrap_or((ty, "untyped"));
            let (suffix, ty) = text_type(ty);
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, h)| h);
                out.extend(["# HELP ", name, suffix, " ", text, "\n"]);
            }
            out.extend(["# TYPE ", name, suffix, " ", ty, "\n"]);
        } else if !(line.starts_with("# UNIT ") || line == "# EOF") {
            out.extend([line, "\n"]);
        }
    }
}

/// OpenMetrics text to text 0.0.4, for a body already encoded.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut text = Exposition::new(false, om.len() + 4096);
    let _ = fmt::Write::write_str(&mut text, om);
    text.finish()
}

/// An OpenMetrics family type as text 0.0.4 names it, with the suffix its
/// samples carry there (a counter's `_total`, an info's `_info`).
fn text_type(ty: &str) -> (&'static str, &str) {
    match ty {
        "counter" => ("_total", "counter"),
        "info" => ("_info", "gauge"),
        "unknown" => ("", "untyped"),
        other => ("", other),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// The conversion as it was once done, from a finished body: the
    /// writer, which converts batches of whole lines, must give the same
    /// bytes.
    pub(crate) fn converted_whole(om: &str) -> String {
        let mut out = String::with_capacity(om.len() + 4096);
        let mut pending_help: Option<&str> = None;
        let mut rest = om;
        while !rest.is_empty() {
            let run_end = if rest.starts_with('#') { 0 } else { memchr::memmem::find(rest.as_bytes(), b"\n#").map_or(rest.len(), |i| i + 1) };
            if run_end > 0 {
                out.push_str(&rest[..run_end]);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                rest = &rest[run_end..];
                continue;
            }
            let (line, next) = rest.split_once('\n').unwrap_or((rest, ""));
            rest = next;
            if let Some(help) = line.strip_prefix("# HELP ") {
                pending_help = Some(help);
            } else if let Some(ty) = line.strip_prefix("# TYPE ") {
                let (name, ty) = ty.split_once(' ').unwrap_or((ty, "untyped"));
                let (suffix, ty) = text_type(ty);
                if let Some(help) = pending_help.take() {
                    let text = help.split_once(' ').map_or("", |(_, h)| h);
                    let _ = writeln!(out, "# HELP {name}{suffix} {text}");
                }
                let _ = writeln!(out, "# TYPE {name}{suffix} {ty}");
            } else if !(line.starts_with("# UNIT ") || line == "# EOF") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Written in pieces of every size, as the encoder writes, and taken
    /// away every `take_every` pieces as a streamed scrape does.
    fn written_in_pieces(om: &str, piece: usize, take_every: usize) -> String {
        let mut text = Exposition::new(false, 0);
        let mut taken = String::new();
        let mut i = 0;
        let mut pieces = 0;
        while i < om.len() {
            let mut end = (i + piece).min(om.len());
            while !om.is_char_boundary(end) {
                end += 1;
            }
            text.write_str(&om[i..end]).unwrap();
            i = end;
            pieces += 1;
            if pieces % take_every == 0 {
                taken.push_str(&text.take_written(16));
            }
        }
        taken + &text.finish()
    }

    #[test]
    fn batched_conversion_gives_the_bytes_of_the_whole_body_conversion() {
        let bodies = [
            "# HELP oomwatch_oom_kills OOM kills.\n# TYPE oomwatch_oom_kills counter\noomwatch_oom_kills_total{cgroup=\"/a\"} 1\n# HELP oomwatch_x_bytes X.\n# TYPE oomwatch_x_bytes gauge\n# UNIT oomwatch_x_bytes bytes\noomwatch_x_bytes 5\n# EOF\n",
            "a 1\nb 2",
            "# HELP h with no type\nsample{l=\"#\"} 1\n\n# TYPE t\n# other comment\n# TYPE i info\ni_info 1\n# TYPE u unknown\n# HELP last",
            "",
            "\n\n#\n",
            "é{x=\"ü\\n#\"} 1\n# EOF",
        ];
        for om in bodies {
            let want = converted_whole(om);
            assert_eq!(openmetrics_to_text(om), want, "{om:?}");
            for piece in [1, 2, 3, 5, 17, 1000] {
                for take_every in [1, 3, usize::MAX] {
                    assert_eq!(written_in_pieces(om, piece, take_every), want, "{om:?} in pieces of {piece}, taken every {take_every}");
                }
            }
        }
    }

    /// Bodies longer than a batch: a batch ends on any line, so a `# HELP`
    /// may be converted in one batch and its `# TYPE` in the next.
    #[test]
    fn bodies_longer_than_a_batch_convert_as_one_body() {
        let mut om = String::new();
        for family in 0..400 {
            let name = format!("oomwatch_family_{family}");
            let ty = ["counter", "gauge", "info", "unknown", "histogram"][family % 5];
            om.push_str(&format!("# HELP {name} Family {family}, which says # in its help.\n# TYPE {name} {ty}\n"));
            if family % 3 == 0 {
                om.push_str(&format!("# UNIT {name} bytes\n"));
            }
            for series in 0..(family % 11) {
                om.push_str(&format!("{name}{{cgroup=\"/a\\n# TYPE x/{series}\"}} {family}.{series}\n"));
            }
        }
        om.push_str("# EOF\n");
        assert!(om.len() > 3 * BATCH_BYTES, "{} bytes", om.len());
        let want = converted_whole(&om);
        assert_eq!(openmetrics_to_text(&om), want);
        for piece in [1, 7, 64, 4093, BATCH_BYTES - 1, BATCH_BYTES + 1] {
            for take_every in [1, 5, usize::MAX] {
                assert!(written_in_pieces(&om, piece, take_every) == want, "pieces of {piece}, taken every {take_every}");
            }
        }
    }

    #[test]
    fn converts_counters_to_text_format() {
        let om = "# HELP oomwatch_oom_kills OOM kills.\n# TYPE oomwatch_oom_kills counter\noomwatch_oom_kills_total{cgroup=\"/a\"} 1\n# HELP oomwatch_x_bytes X.\n# TYPE oomwatch_x_bytes gauge\n# UNIT oomwatch_x_bytes bytes\noomwatch_x_bytes 5\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP oomwatch_oom_kills_total OOM kills.\n# TYPE oomwatch_oom_kills_total counter\noomwatch_oom_kills_total{cgroup=\"/a\"} 1\n# HELP oomwatch_x_bytes X.\n# TYPE oomwatch_x_bytes gauge\noomwatch_x_bytes 5\n"
        );
    }
}

