//! Where a problem is and how it reads: byte offsets to line and column, `toml`'s messages
//! in the file's terms, and the rendering of all problems of one file.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::secret::redact;

/// Byte range in the config text.
pub(super) type Span = Range<usize>;
/// Where a problem is, if known.
pub(super) type Loc = Option<Span>;

/// Every problem found in one config file; Display prints one per line as
/// `path:line:col: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.path, .problems))]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

/// One problem in a config file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column (in characters), 0 when unknown.
    pub column: usize,
    /// What is wrong, in user terms, credentials redacted.
    pub message: String,
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    if problems.is_empty() {
        return format!("{}: invalid configuration", path.display());
    }
    problems
        .iter()
        .map(|p| {
            if p.line == 0 {
                format!("{}: {}", path.display(), p.message)
            } else {
                format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The message of a `toml` error, in the file's terms rather than serde's
/// (keys, tables and arrays instead of fields, structs, maps and sequences).
pub(super) fn parse_error_message(err: &toml::de::Error, text: &str) -> String {
    if err.message().trim().is_empty() {
        // Some syntax errors come without words (a stray character, a carriage return
        // without a line feed): say what is at the spot rather than nothing.
        let found = err
            .span()
            .and_then(|s| text.get(s.start..))
            .and_then(|t| t.chars().next());
        return match found {
            Some(c) => format!(
                "invalid TOML: unexpected character {c:?} here (a stray character, a missing \
                 quote, or a carriage return without a line feed?)"
            ),
            None => "invalid TOML: the file ends too early (an unclosed quote, bracket or \
                     table?)"
                .to_string(),
        };
    }
    let mut message = err
        .message()
        .trim_end()
        .replacen("unknown field", "unknown key", 1)
        .replace("invalid type: map,", "invalid type: table,")
        .replace("invalid type: sequence,", "invalid type: array,")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer");
    // "expected struct Database" names one of our private types.
    if let Some(start) = message.find("expected struct ") {
        let name_start = start + "expected struct ".len();
        let name_end = message[name_start..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(message.len(), |i| name_start + i);
        message.replace_range(start..name_end, "expected a table");
    }
    message
}

/// Turns byte offsets into 1-based line and column (in characters).
pub(super) struct LineIndex<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, line_starts }
    }

    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // line_starts[0] == 0 <= offset, so line >= 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    pub(super) fn problem(&self, at: Loc, message: &str) -> Problem {
        let (line, column) = at.map_or((0, 0), |span| self.position(span.start));
        Problem {
            line,
            column,
            message: redact(message),
        }
    }
}
