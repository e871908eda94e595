//! Walking the spanned TOML tree: typed fields by key, every mistake recorded
//! with its position, and every key nobody asked for reported as unknown.
//!
//! The parser never stops at the first mistake. Each reader returns
//! [`Read<T>`]: `Err(Reported)` only means "the problem is already in the
//! [`Collector`], give up on this value"; the caller goes on reading the other
//! fields, and the collector decides at the end whether the file was valid.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::error::{ConfigError, ConfigErrors};

/// A byte range in the config text.
pub(crate) type Span = Range<usize>;

/// Marker for a value given up on because its problem was already reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reported;

/// The result of reading one value.
pub(crate) type Read<T> = Result<T, Reported>;

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Field<T> {
    pub value: T,
    pub span: Span,
}

/// What kind of mistake a report is, which decides whether it is trustworthy
/// after a syntax error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// From the TOML parser.
    Syntax,
    /// A value or key that is present and wrong.
    Invalid,
    /// Something required that is absent. After a syntax error the parser's
    /// recovery may have dropped it, so these are only trusted in clean files.
    Absent,
}

#[derive(Debug)]
struct Report {
    offset: usize,
    kind: Kind,
    message: String,
}

/// Collects every mistake in one file; knows the file name and text to turn
/// byte offsets into `line:col`.
///
/// Shared by reference between all [`Table`]s of a parse (hence the `RefCell`):
/// the tree is read by many small functions that each report their own mistakes.
pub(crate) struct Collector<'s> {
    file: &'s str,
    text: &'s str,
    reports: RefCell<Vec<Report>>,
}

impl<'s> Collector<'s> {
    pub fn new(file: &'s str, text: &'s str) -> Self {
        Collector {
            file,
            text,
            reports: RefCell::new(Vec::new()),
        }
    }

    /// The folder that relative paths in the file (certificates, policy
    /// files) are relative to: the config file's own.
    pub fn base_dir(&self) -> std::path::PathBuf {
        std::path::Path::new(self.file)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Records an error of the TOML parser itself (syntax, duplicate key).
    pub fn syntax(&self, span: Option<Span>, message: &str) {
        let span = span.unwrap_or(0..0);
        // The parser says only "duplicate key"; naming the key helps when a line holds several.
        let message = match self.text.get(span.clone()) {
            Some(key) if message == "duplicate key" && !key.is_empty() => {
                format!("duplicate key `{key}`")
            }
            _ => message.to_owned(),
        };
        self.push(span.start, Kind::Syntax, message);
    }

    /// Records a mistake in something written at `span`.
    pub fn error(&self, span: &Span, message: impl Into<String>) -> Reported {
        self.push(span.start, Kind::Invalid, message.into());
        Reported
    }

    /// Records that something required is missing (reported at `span`, usually
    /// the enclosing table's header). Dropped if the file has syntax errors,
    /// since the parser's recovery may be what lost it.
    pub fn absent(&self, span: &Span, message: impl Into<String>) -> Reported {
        self.push(span.start, Kind::Absent, message.into());
        Reported
    }

    fn push(&self, offset: usize, kind: Kind, message: String) {
        self.reports.borrow_mut().push(Report {
            offset,
            kind,
            message,
        });
    }

    /// The 1-based line of a byte offset, for messages that point at another place.
    pub fn line_of(&self, span: &Span) -> usize {
        position(self.text, span.start).0
    }

    /// Reads `value` as a `T`, reporting a type mismatch as `<subject> must be …`.
    pub fn value<'a, T: FromValue<'a>>(
        &self,
        value: &'a Spanned<DeValue<'a>>,
        subject: &str,
    ) -> Read<Field<T>> {
        let span = value.span();
        match T::from_value(value.get_ref(), subject) {
            Ok(value) => Ok(Field { value, span }),
            Err(message) => Err(self.error(&span, message)),
        }
    }

    /// `Ok(value)` when nothing was reported, else every trustworthy report in
    /// file order.
    ///
    /// After a syntax error, reports of missing things and reports on the same
    /// line as a syntax error are dropped: they are most likely echoes of the
    /// parser's recovery (a value cut short, a table lost), not separate mistakes.
    pub fn finish<T>(self, value: Read<T>) -> Result<T, ConfigErrors> {
        let mut reports = self.reports.into_inner();
        reports.sort_by_key(|r| r.offset);
        let syntax_lines: BTreeSet<usize> = reports
            .iter()
            .filter(|r| r.kind == Kind::Syntax)
            .map(|r| position(self.text, r.offset).0)
            .collect();
        let damaged = !syntax_lines.is_empty();
        let errors: Vec<ConfigError> = reports
            .into_iter()
            .map(|r| (position(self.text, r.offset), r))
            .filter(|((line, _), r)| match r.kind {
                Kind::Syntax => true,
                Kind::Invalid => !syntax_lines.contains(line),
                Kind::Absent => !damaged,
            })
            .map(|((line, col), r)| ConfigError {
                file: self.file.to_owned(),
                line,
                col,
                message: r.message,
            })
            .collect();
        match (ConfigErrors::from_vec(errors), value) {
            (Some(errors), _) => Err(errors),
            (None, Ok(value)) => Ok(value),
            // A reader gave up without saying why: a bug, but still no panic.
            (None, Err(Reported)) => Err(ConfigErrors::single(ConfigError {
                file: self.file.to_owned(),
                line: 1,
                col: 1,
                message: "the config could not be read".into(),
            })),
        }
    }
}

/// The 1-based line and character column of a byte offset; offsets past the
/// end or inside a character are clamped rather than trusted.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, col)
}

/// A TOML value type the readers can ask for.
pub(crate) trait FromValue<'a>: Sized {
    /// How the type is named in messages: "a string".
    const EXPECTED: &'static str;

    /// Converts `value`, or says why not in a sentence about `subject`
    /// (already formatted, e.g. "`weight`").
    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String>;
}

/// "`weight` must be an integer, not a string".
fn mismatch<T>(subject: &str, expected: &str, value: &DeValue<'_>) -> Result<T, String> {
    Err(format!(
        "{subject} must be {expected}, not {}",
        type_name(value)
    ))
}

/// The TOML type of a value, with its article, for messages.
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "a string";

    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String> {
        match value {
            DeValue::String(s) => Ok(s),
            other => mismatch(subject, Self::EXPECTED, other),
        }
    }
}

impl<'a> FromValue<'a> for i64 {
    const EXPECTED: &'static str = "an integer";

    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String> {
        match value {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("{subject} is too large")),
            other => mismatch(subject, Self::EXPECTED, other),
        }
    }
}

impl<'a> FromValue<'a> for bool {
    const EXPECTED: &'static str = "true or false";

    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String> {
        match value {
            DeValue::Boolean(b) => Ok(*b),
            other => mismatch(subject, Self::EXPECTED, other),
        }
    }
}

impl<'a> FromValue<'a> for &'a DeArray<'a> {
    const EXPECTED: &'static str = "an array";

    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String> {
        match value {
            DeValue::Array(a) => Ok(a),
            other => mismatch(subject, Self::EXPECTED, other),
        }
    }
}

/// A duration string such as `"5s"`, named as such in type mismatches so that
/// `connect = 5` gets a useful hint; parsing is left to the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationStr<'a>(pub &'a str);

impl<'a> FromValue<'a> for DurationStr<'a> {
    const EXPECTED: &'static str = "a duration string like \"5s\"";

    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String> {
        match value {
            DeValue::String(s) => Ok(DurationStr(s)),
            other => mismatch(subject, Self::EXPECTED, other),
        }
    }
}

/// Reads one TOML table: hands out typed fields by key and remembers every key
/// asked for, so that [`Table::finish`] can report the rest as unknown.
pub(crate) struct Table<'a> {
    errors: &'a Collector<'a>,
    entries: &'a DeTable<'a>,
    span: Span,
    /// Dotted path, e.g. `pool.web.timeouts`; empty for the top level.
    path: String,
    /// How messages name the table, e.g. `[pool.web]` or `[[listener]]`.
    name: String,
    /// Every key the schema asked for, present or not (candidates for "did you mean").
    known: Vec<&'static str>,
}

impl<'a> Table<'a> {
    /// The top level of the document.
    pub fn root(errors: &'a Collector<'a>, doc: &'a Spanned<DeTable<'a>>) -> Self {
        Table::new(
            errors,
            doc.get_ref(),
            doc.span(),
            String::new(),
            String::new(),
        )
    }

    /// `name` is how messages refer to the table, e.g. "[pool.web]".
    fn new(
        errors: &'a Collector<'a>,
        entries: &'a DeTable<'a>,
        span: Span,
        path: String,
        name: String,
    ) -> Self {
        Table {
            errors,
            entries,
            span,
            path,
            name,
            known: Vec::new(),
        }
    }

    /// Reads a table that is an item of an array, e.g. an inline `{ address = … }`.
    pub fn from_item(
        errors: &'a Collector<'a>,
        item: &'a Spanned<DeValue<'a>>,
        path: String,
        name: String,
    ) -> Option<Self> {
        match item.get_ref() {
            DeValue::Table(entries) => Some(Table::new(errors, entries, item.span(), path, name)),
            _ => None,
        }
    }

    /// The collector, for checks made outside this table's accessors.
    pub fn errors(&self) -> &'a Collector<'a> {
        self.errors
    }

    /// Where the table was written (its header), for reports about the table as a whole.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// How messages name this table, e.g. "[pool.web]".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw value of `key`, marking the key as known.
    fn entry(&mut self, key: &'static str) -> Option<&'a Spanned<DeValue<'a>>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.entries.get(key)
    }

    /// An optional field of type `T`.
    pub fn get<T: FromValue<'a>>(&mut self, key: &'static str) -> Read<Option<Field<T>>> {
        match self.entry(key) {
            None => Ok(None),
            Some(value) => self.errors.value(value, &format!("`{key}`")).map(Some),
        }
    }

    /// A required field of type `T`; its absence is reported as "[x] is missing `key`".
    pub fn get_required<T: FromValue<'a>>(&mut self, key: &'static str) -> Read<Field<T>> {
        match self.get(key)? {
            Some(field) => Ok(field),
            None => Err(self.errors.absent(
                &self.span,
                format!("{} is missing `{key}`", self.describe()),
            )),
        }
    }

    /// An optional field converted by `check`, whose error sentence is reported
    /// at the value; `default` when the key is absent.
    pub fn optional<T: FromValue<'a>, U>(
        &mut self,
        key: &'static str,
        default: U,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Read<U> {
        match self.get::<T>(key)? {
            None => Ok(default),
            Some(field) => check(field.value).map_err(|m| self.errors.error(&field.span, m)),
        }
    }

    /// A required field converted by `check`, whose error sentence is reported at the value.
    pub fn required<T: FromValue<'a>, U>(
        &mut self,
        key: &'static str,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Read<U> {
        let field = self.get_required::<T>(key)?;
        check(field.value).map_err(|m| self.errors.error(&field.span, m))
    }

    /// An optional sub-table `[this.key]` (or `key = { … }`).
    pub fn table(&mut self, key: &'static str) -> Read<Option<Table<'a>>> {
        let Some(value) = self.entry(key) else {
            return Ok(None);
        };
        let path = self.child_path(key);
        match value.get_ref() {
            DeValue::Table(entries) => Ok(Some(Table::new(
                self.errors,
                entries,
                value.span(),
                path.clone(),
                format!("[{path}]"),
            ))),
            other => Err(self.errors.error(
                &value.span(),
                format!("`{key}` must be a table, not {}", type_name(other)),
            )),
        }
    }

    /// An array of tables `[[this.key]]`, in file order; empty when absent.
    /// Items that are not tables are reported and left out.
    pub fn tables(&mut self, key: &'static str) -> Read<Vec<Table<'a>>> {
        let Some(value) = self.entry(key) else {
            return Ok(Vec::new());
        };
        let path = self.child_path(key);
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.errors.error(
                &value.span(),
                format!(
                    "`{key}` must be an array of tables, written [[{path}]], not {}",
                    type_name(value.get_ref())
                ),
            ));
        };
        let errors = self.errors;
        let tables = items
            .iter()
            .filter_map(|item| {
                let table = Table::from_item(errors, item, path.clone(), format!("[[{path}]]"));
                if table.is_none() {
                    errors.error(
                        &item.span(),
                        format!(
                            "each `{key}` must be a table, not {}",
                            type_name(item.get_ref())
                        ),
                    );
                }
                table
            })
            .collect();
        Ok(tables)
    }

    /// A table of named tables, `[this.key.NAME]`, as (name, table) in file order;
    /// empty when absent. Entries that are not tables are reported and left out.
    pub fn named_tables(&mut self, key: &'static str) -> Read<Vec<(Field<&'a str>, Table<'a>)>> {
        let Some(parent) = self.table(key)? else {
            return Ok(Vec::new());
        };
        let mut named = Vec::new();
        for (name, value) in sorted(parent.entries) {
            let path = parent.child_path(name.get_ref());
            match value.get_ref() {
                DeValue::Table(entries) => {
                    let table = Table::new(
                        self.errors,
                        entries,
                        value.span(),
                        path.clone(),
                        format!("[{path}]"),
                    );
                    let name = Field {
                        value: name.get_ref().as_ref(),
                        span: name.span(),
                    };
                    named.push((name, table));
                }
                other => {
                    self.errors.error(
                        &value.span(),
                        format!("`{path}` must be a table, not {}", type_name(other)),
                    );
                }
            }
        }
        // Every entry of `parent` was handled above, so it has no unknown keys to finish.
        Ok(named)
    }

    /// Reports each of `keys` that is present as not supported yet: contract
    /// keys must never be silently ignored (TLS asked for must not become plaintext).
    pub fn not_yet(&mut self, keys: &[&'static str]) {
        for &key in keys {
            if !self.known.contains(&key) {
                self.known.push(key);
            }
            if let Some((name, _)) = self.entries.get_key_value(key) {
                self.errors.error(
                    &name.span(),
                    format!("`{key}` is not supported by this version of wharf yet"),
                );
            }
        }
    }

    /// Reports every key that no reader asked for, suggesting a close known key.
    pub fn finish(self) {
        for (key, _) in sorted(self.entries) {
            let key_str: &str = key.get_ref();
            if self.known.contains(&key_str) {
                continue;
            }
            let mut message = format!("unknown key `{key_str}` {}", self.place());
            if let Some(suggestion) = closest(key_str, &self.known) {
                message.push_str(&format!("; did you mean `{suggestion}`?"));
            }
            self.errors.error(&key.span(), message);
        }
    }

    /// The dotted path of a child key; keys that are not bare are quoted.
    fn child_path(&self, key: &str) -> String {
        let key = if !key.is_empty() && key.chars().all(is_bare_key_char) {
            key.to_owned()
        } else {
            format!("{key:?}")
        };
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// "in [pool.web]", or "at the top level" for the document itself.
    fn place(&self) -> String {
        if self.name.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in {}", self.name)
        }
    }

    /// "[pool.web]", or "the config" for the document itself.
    fn describe(&self) -> &str {
        if self.name.is_empty() {
            "the config"
        } else {
            &self.name
        }
    }
}

/// Characters allowed in a TOML bare key.
pub(crate) fn is_bare_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The entries of a table in file order (the map itself is sorted by key).
fn sorted<'t, 'a>(
    entries: &'t DeTable<'a>,
) -> Vec<(
    &'t Spanned<std::borrow::Cow<'a, str>>,
    &'t Spanned<DeValue<'a>>,
)> {
    let mut entries: Vec<_> = entries.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// The known key closest to `key`, if within two edits (and not a total rewrite
/// of a very short key).
pub(crate) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|&candidate| (edit_distance(key, candidate), candidate))
        .filter(|&(distance, _)| distance <= 2 && distance < key.chars().count())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nné = \"x\"\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 4), (1, 5));
        assert_eq!(position(text, 6), (2, 1));
        // `=` after the two-byte `é`: byte 10, character column 4.
        assert_eq!(position(text, 10), (2, 4));
        assert_eq!(position(text, text.len()), (3, 1));
        assert_eq!(position(text, 10_000), (3, 1));
        // Inside `é`: clamped to its start.
        assert_eq!(position(text, 8), (2, 2));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("path_prefix", "path_prefix"), 0);
        assert_eq!(edit_distance("path_prefx", "path_prefix"), 1);
        assert_eq!(edit_distance("pth_prefx", "path_prefix"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_only_close_keys() {
        let known = ["host", "path_prefix", "pool", "upgrades"];
        assert_eq!(closest("path_prefx", &known), Some("path_prefix"));
        assert_eq!(closest("pools", &known), Some("pool"));
        assert_eq!(closest("weight", &known), None);
        assert_eq!(closest("x", &known), None);
    }
}
