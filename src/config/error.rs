//! Config errors: each one a place in the file and a plain sentence, so that
//! `wharf check` output can be read by people and jumped to by editors.

use std::fmt;

/// One mistake in a config file, at a 1-based line and column.
///
/// `line` and `col` are 0 when the error is about the file as a whole (it could
/// not be read); it is then shown as `file: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    /// Counted in characters, not bytes.
    pub col: usize,
    pub message: String,
}

impl ConfigError {
    /// An error about the whole file, such as it being unreadable.
    pub fn io(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: 0,
            col: 0,
            message: message.into(),
        }
    }
}

/// `file:line:col: message`, the form compilers use and editors understand.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every mistake found in a config file (never empty), in file order, so that a
/// user fixes them all in one round instead of one per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Wraps a single error, e.g. an unreadable file.
    pub fn single(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }

    /// Wraps a list the parser collected; `None` when there is nothing to report.
    pub(crate) fn from_vec(errors: Vec<ConfigError>) -> Option<Self> {
        (!errors.is_empty()).then_some(ConfigErrors(errors))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for errors returned by the parser; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One error per line, without a trailing newline.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, col: usize, message: &str) -> ConfigError {
        ConfigError {
            file: "wharf.toml".into(),
            line,
            col,
            message: message.into(),
        }
    }

    #[test]
    fn displays_file_line_col() {
        assert_eq!(
            at(3, 7, "unknown key `x`").to_string(),
            "wharf.toml:3:7: unknown key `x`"
        );
    }

    #[test]
    fn io_errors_have_no_position() {
        let e = ConfigError::io("missing.toml", "No such file or directory (os error 2)");
        assert_eq!(
            e.to_string(),
            "missing.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let all = ConfigErrors::from_vec(vec![at(1, 1, "a"), at(2, 5, "b")]).expect("not empty");
        assert_eq!(all.len(), 2);
        assert_eq!(all.to_string(), "wharf.toml:1:1: a\nwharf.toml:2:5: b");
        assert!(ConfigErrors::from_vec(Vec::new()).is_none());
    }
}
