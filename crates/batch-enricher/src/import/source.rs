//! Source files of an import: where they are, how they are compressed, and their rows.

use std::{io::Read as _, path::PathBuf};

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};
use sightline_lake::ObjectStore;

use crate::BatchError;

/// Where the files of an import are.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local file, or every file under a local folder.
    Local(PathBuf),
    /// Every object under a lake prefix (`lake:imports/2025-03/`).
    Lake(String),
}

impl Source {
    /// `lake:PREFIX` or a local path.
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix("lake:") {
            Some(prefix) => Self::Lake(prefix.to_owned()),
            None => Self::Local(PathBuf::from(s)),
        }
    }

    /// The files to import, sorted (their names identify them in keys).
    pub async fn files(&self, lake: &dyn ObjectStore) -> Result<Vec<String>, BatchError> {
        let mut files = match self {
            Self::Lake(prefix) => lake.list(prefix).await?,
            Self::Local(path) if path.is_dir() => {
                let mut out = Vec::new();
                let mut stack = vec![path.clone()];
                while let Some(dir) = stack.pop() {
                    let entries = std::fs::read_dir(&dir).map_err(|source| BatchError::Io {
                        path: dir.display().to_string(),
                        source,
                    })?;
                    for entry in entries.flatten() {
                        let p = entry.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            out.push(p.display().to_string());
                        }
                    }
                }
                out
            }
            Self::Local(path) => vec![path.display().to_string()],
        };
        files.retain(|f| Format::of(f).is_some());
        files.sort();
        Ok(files)
    }

    /// The bytes of `file`, gunzipped when it ends in `.gz` or starts with gzip's magic.
    pub async fn read(&self, lake: &dyn ObjectStore, file: &str) -> Result<Vec<u8>, BatchError> {
        let body: Bytes = match self {
            Self::Lake(_) => lake.get(file).await?,
            Self::Local(_) => tokio::fs::read(file)
                .await
                .map_err(|source| BatchError::Io {
                    path: file.to_owned(),
                    source,
                })?
                .into(),
        };
        if body.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            MultiGzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .map_err(|source| BatchError::Io {
                    path: file.to_owned(),
                    source,
                })?;
            return Ok(out);
        }
        Ok(body.to_vec())
    }
}

/// The format of a source file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header line (RFC 4180 quoting).
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// `.csv`, `.jsonl`, `.ndjson` or `.json`, optionally followed by `.gz`.
    pub fn of(name: &str) -> Option<Self> {
        let name = name
            .strip_suffix(".gz")
            .unwrap_or(name)
            .to_ascii_lowercase();
        if name.ends_with(".csv") {
            Some(Self::Csv)
        } else if [".jsonl", ".ndjson", ".json"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            Some(Self::JsonLines)
        } else {
            None
        }
    }
}

/// One source row: its fields, or why it could not be read, and its text as found.
#[derive(Debug, Clone)]
pub struct SourceRow {
    /// 1-based line (record) number.
    pub line: usize,
    /// The fields, or the reason the row is unreadable.
    pub fields: Result<Map<String, Value>, String>,
    /// The row as it was in the file.
    pub text: String,
}

/// The rows of a file.
pub fn rows(format: Format, body: &[u8]) -> Vec<SourceRow> {
    let text = String::from_utf8_lossy(body);
    match format {
        Format::JsonLines => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| SourceRow {
                line: i + 1,
                fields: match serde_json::from_str::<Value>(l) {
                    Ok(Value::Object(map)) => Ok(map),
                    Ok(_) => Err("not_an_object".to_owned()),
                    Err(_) => Err("invalid_json".to_owned()),
                },
                text: l.to_owned(),
            })
            .collect(),
        Format::Csv => {
            let records = csv_records(&text);
            let Some((header, rest)) = records.split_first() else {
                return Vec::new();
            };
            rest.iter()
                .enumerate()
                .filter(|(_, (fields, _))| fields.iter().any(|f| !f.is_empty()))
                .map(|(i, (fields, raw))| SourceRow {
                    line: i + 2,
                    fields: if fields.len() == header.0.len() {
                        Ok(header
                            .0
                            .iter()
                            .zip(fields)
                            .filter(|(_, v)| !v.is_empty())
                            .map(|(k, v)| (k.trim().to_owned(), Value::String(v.clone())))
                            .collect())
                    } else {
                        Err("wrong_field_count".to_owned())
                    },
                    text: raw.clone(),
                })
                .collect()
        }
    }
}

/// RFC 4180 records: fields and the record's raw text. Quoted fields may hold commas, quotes
/// (doubled) and line breaks.
fn csv_records(text: &str) -> Vec<(Vec<String>, String)> {
    let mut records = Vec::new();
    let (mut fields, mut field, mut raw) = (Vec::new(), String::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        if c != '\n' || quoted {
            raw.push(c);
        }
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                raw.push('"');
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                records.push((std::mem::take(&mut fields), std::mem::take(&mut raw)));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((fields, raw));
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_hold_commas_quotes_and_line_breaks() {
        let text = "a,b,c\n1,\"x, \"\"y\"\"\",\"two\nlines\"\r\n2,,3\n";
        let rows = rows(Format::Csv, text.as_bytes());
        assert_eq!(rows.len(), 2);
        let first = rows[0].fields.as_ref().unwrap();
        assert_eq!(first["b"], "x, \"y\"");
        assert_eq!(first["c"], "two\nlines");
        let second = rows[1].fields.as_ref().unwrap();
        assert!(!second.contains_key("b"), "empty fields are absent");
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn unreadable_rows_carry_their_reason() {
        let rows = rows(Format::JsonLines, b"{\"a\":1}\n[1]\n{oops\n\n");
        let reasons: Vec<_> = rows
            .iter()
            .map(|r| r.fields.as_ref().err().cloned())
            .collect();
        assert_eq!(
            reasons,
            [
                None,
                Some("not_an_object".into()),
                Some("invalid_json".into())
            ]
        );
    }

    #[test]
    fn formats_come_from_names() {
        assert_eq!(Format::of("x/events.CSV.gz"), Some(Format::Csv));
        assert_eq!(Format::of("e.ndjson"), Some(Format::JsonLines));
        assert_eq!(Format::of("notes.txt"), None);
    }
}
