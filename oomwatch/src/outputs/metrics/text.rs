//! Prometheus text format 0.0.4 from OpenMetrics as the encoder writes it:
//! counter families are named with their `_total` suffix, `# UNIT` and
//! `# EOF` go, samples pass through. Converting line by line, not from a
//! finished OpenMetrics body, keeps one body in memory during a scrape
//! instead of two (at 10,000 cgroups a body is about 9 MiB).

use std::fmt;

/// A `fmt::Write` that takes OpenMetrics text and holds text 0.0.4.
pub struct TextFormat {
    out: String,
    /// Where the line being written starts in `out`.
    line_start: usize,
    /// A `# HELP` waits for its `# TYPE`, which says the family's name.
    pending_help: Option<String>,
}

impl TextFormat {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { out: String::with_capacity(capacity), line_start: 0, pending_help: None }
    }

    /// The text, its last line ended.
    pub fn finish(mut self) -> String {
        if self.line_start < self.out.len() {
            self.out.push('\n');
            self.line_ended();
        }
        self.out
    }

    fn line_ended(&mut self) {
        if self.out.as_bytes().get(self.line_start) == Some(&b'#') {
            let mut line = self.out.split_off(self.line_start);
            line.pop();
            self.comment(&line);
        }
        self.line_start = self.out.len();
    }

    fn comment(&mut self, line: &str) {
        if let Some(help) = line.strip_prefix("# HELP ") {
            self.pending_help = Some(help.to_owned());
        } else if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, ty) = ty.split_once(' ').unwrap_or((ty, "untyped"));
            let (suffix, ty) = match ty {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some(help) = self.pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, h)| h);
                self.out.extend(["# HELP ", name, suffix, " ", text, "\n"]);
            }
            self.out.extend(["# TYPE ", name, suffix, " ", ty, "\n"]);
        } else if !(line.starts_with("# UNIT ") || line == "# EOF") {
            self.out.extend([line, "\n"]);
        }
    }
}

impl fmt::Write for TextFormat {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = memchr::memchr(b'\n', rest.as_bytes()) {
            self.out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            self.line_ended();
        }
        self.out.push_str(rest);
        Ok(())
    }
}

/// OpenMetrics text to text 0.0.4, for a body already encoded.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut text = TextFormat::with_capacity(om.len() + 4096);
    let _ = fmt::Write::write_str(&mut text, om);
    text.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// The conversion as it was done from a finished body (before the
    /// line-by-line writer): the writer must give the same bytes.
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
                let (suffix, ty) = match ty {
                    "counter" => ("_total", "counter"),
                    "info" => ("_info", "gauge"),
                    "unknown" => ("", "untyped"),
                    other => ("", other),
                };
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

    /// Written in pieces of every size, as the encoder writes.
    fn written_in_pieces(om: &str, piece: usize) -> String {
        let mut text = TextFormat::with_capacity(0);
        let mut i = 0;
        while i < om.len() {
            let mut end = (i + piece).min(om.len());
            while !om.is_char_boundary(end) {
                end += 1;
            }
            text.write_str(&om[i..end]).unwrap();
            i = end;
        }
        text.finish()
    }

    #[test]
    fn line_by_line_gives_the_bytes_of_the_whole_body_conversion() {
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
                assert_eq!(written_in_pieces(om, piece), want, "{om:?} in pieces of {piece}");
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
