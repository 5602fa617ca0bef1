//! `file:line:column` for every error in a file an operator wrote.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a file, 1-based. `line` 0 means the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the position is in.
    pub file: PathBuf,
    /// 1-based line; 0 for the file as a whole.
    pub line: u64,
    /// 1-based column; 0 when `line` is 0.
    pub column: u64,
}

/// An error in an operator's file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct Located {
    /// Where the problem is.
    pub location: Location,
    /// What sort of mistake it is, for tools and tests that sort errors.
    pub problem: Problem,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// What sort of mistake an operator's file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// Not well-formed YAML or TOML.
    Syntax,
    /// A key the format does not have.
    UnknownField,
    /// A required key is absent.
    Missing,
    /// A value of the wrong type (a list where a string belongs, text where a number belongs).
    WrongType,
    /// A key given twice.
    Duplicate,
    /// A name that refers to nothing: a plugin, connection, step, param or scaler.
    UnknownName,
    /// A value of the right type that is still wrong: a bad cron line, duration or URL.
    BadValue,
    /// A `${{ }}` expression, `if:` condition or `script:` that does not compile.
    Expression,
    /// An environment variable or secret file the file refers to is missing.
    Environment,
}

impl Location {
    /// The file as a whole, when no finer position is known.
    pub fn file(file: &Path) -> Self {
        Location {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
        }
    }

    /// A known line and column, both 1-based.
    pub fn at(file: &Path, line: u64, column: u64) -> Self {
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    }

    /// The position of byte `offset` in `text`.
    pub fn from_offset(file: &Path, text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() as u64 + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() as u64 + 1;
        Location::at(file, line, column)
    }

    /// The first line where `key` is defined (`key =` or `key:`), for checks made after parsing.
    pub fn of_key(file: &Path, text: &str, key: &str) -> Self {
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(key)
                && matches!(rest.trim_start().chars().next(), Some('=' | ':'))
            {
                let column = (line.len() - trimmed.len()) as u64 + 1;
                return Location::at(file, i as u64 + 1, column);
            }
        }
        Location::file(file)
    }

    /// An error at this position, for the operator to fix.
    pub fn error(self, message: impl Into<String>) -> Located {
        self.problem(Problem::BadValue, message)
    }

    /// An error of a given sort at this position.
    pub fn problem(self, problem: Problem, message: impl Into<String>) -> Located {
        Located {
            location: self,
            problem,
            message: message.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        let loc = Location::from_offset(Path::new("f"), text, 9);
        assert_eq!((loc.line, loc.column), (2, 4));
        assert_eq!(loc.to_string(), "f:2:4");
    }

    #[test]
    fn keys_are_found_by_their_definition() {
        let text = "x: 1\n  name: y\n";
        let loc = Location::of_key(Path::new("f"), text, "name");
        assert_eq!((loc.line, loc.column), (2, 3));
    }
}
