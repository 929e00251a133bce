//! What every subcommand produces, and how it leaves the process: data frames rendered as a table, CSV or JSON
//! on stdout, and files (CSV, JSON, SVG, HTML) written atomically into an output directory.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::markup::escape;
use crate::plot::Plot;
use crate::record;
use crate::table::{Table, num};

/// One cell of a [`Frame`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    /// A count or index.
    Int(i64),
    /// A measured number (NaN and ±∞ are written as text, `null` in JSON).
    Num(f64),
    /// A name.
    Text(String),
    /// A name that is code (an identifier): `backticked` in Markdown.
    Code(String),
    /// A measured number shown to two significant digits (`8.8e-8`; exact 0 as `0`), full precision in CSV
    /// and JSON.
    Approx(f64),
    /// Not applicable (empty in CSV, `null` in JSON, `-` in tables).
    None,
}

impl Cell {
    fn table(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            Cell::Num(v) if v.is_finite() => num(*v),
            Cell::Num(v) => v.to_string(),
            Cell::Text(s) | Cell::Code(s) => s.clone(),
            Cell::Approx(v) if *v == 0.0 => "0".into(),
            Cell::Approx(v) => format!("{v:.1e}"),
            Cell::None => "-".into(),
        }
    }

    fn csv(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            // Rust's shortest round-trip form: the exact f64 back when parsed.
            Cell::Num(v) | Cell::Approx(v) => format!("{v:e}"),
            Cell::Text(s) | Cell::Code(s) if s.contains([',', '"', '\n']) => {
                format!("\"{}\"", s.replace('"', "\"\""))
            }
            Cell::Text(s) | Cell::Code(s) => s.clone(),
            Cell::None => String::new(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Int(v) => (*v).into(),
            Cell::Num(v) | Cell::Approx(v) => {
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into)
            }
            Cell::Text(s) | Cell::Code(s) => s.clone().into(),
            Cell::None => serde_json::Value::Null,
        }
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Cell {
        Cell::Num(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Cell {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Cell {
    fn from(v: u32) -> Cell {
        Cell::Int(v.into())
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Cell {
        Cell::Text(v.into())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Text(v)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Cell {
        v.map_or(Cell::None, Into::into)
    }
}

/// A named table of measurements: the unit of CSV output and of the data behind each plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// File stem when written to a directory (`<name>.csv`).
    pub name: String,
    /// One line saying what the rows are.
    pub title: String,
    /// Column names (CSV header, JSON keys).
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
}

impl Frame {
    /// An empty frame.
    pub fn new(name: &str, title: impl Into<String>, columns: &[&str]) -> Frame {
        Frame {
            name: name.into(),
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A frame with one row per record and one column per field, in the fields' order: numbers (NaN and ±∞
    /// kept), names (enums by their serialized name), `None`s. Nested records are flattened with
    /// `#[serde(flatten)]`; other nested values are not supported (an error).
    pub fn from_records<T: Serialize>(
        name: &str,
        title: impl Into<String>,
        records: &[T],
    ) -> Result<Frame> {
        let rows = records
            .iter()
            .map(|r| {
                let mut row = Vec::new();
                r.serialize(record::Fields(&mut row))?;
                Ok(row)
            })
            .collect::<std::result::Result<Vec<_>, record::Unsupported>>()
            .map_err(|e| anyhow::anyhow!("frame {name}: {e}"))?;
        let columns: Vec<&str> = rows
            .first()
            .map_or(Vec::new(), |r| r.iter().map(|(k, _)| k.as_str()).collect());
        let mut f = Frame::new(name, title, &columns);
        for r in rows {
            f.push(r.into_iter().map(|(_, c)| c).collect());
        }
        Ok(f)
    }

    /// Append a row (padded or cut to the column count).
    pub fn push(&mut self, row: Vec<Cell>) {
        let mut row = row;
        row.resize(self.columns.len(), Cell::None);
        self.rows.push(row);
    }

    /// An aligned text table.
    pub fn table(&self) -> String {
        let mut t = Table::new(self.columns.clone());
        for r in &self.rows {
            t.push(r.iter().map(Cell::table));
        }
        t.render()
    }

    /// CSV with a header row.
    pub fn csv(&self) -> String {
        let mut out = self.columns.join(",") + "\n";
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(Cell::csv).collect();
            out += &cells.join(",");
            out.push('\n');
        }
        out
    }

    /// The rows as a JSON array of objects keyed by column.
    pub fn json(&self) -> serde_json::Value {
        self.rows
            .iter()
            .map(|r| {
                let m: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(r.iter().map(Cell::json))
                    .collect();
                serde_json::Value::Object(m)
            })
            .collect()
    }

    /// A Markdown table (cells as in the text table, code in backticks).
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.columns.join(" | "));
        out += &format!("|{}\n", "---|".repeat(self.columns.len()));
        for r in &self.rows {
            let cells: Vec<String> = r
                .iter()
                .map(|c| match c {
                    Cell::Code(t) => format!("`{t}`"),
                    other => other.table(),
                })
                .collect();
            out += &format!("| {} |\n", cells.join(" | "));
        }
        out
    }

    /// An HTML table.
    pub fn html(&self) -> String {
        let mut out = String::from("<table>\n<tr>");
        for c in &self.columns {
            let _ = write!(out, "<th>{}</th>", escape(c));
        }
        out += "</tr>\n";
        for r in &self.rows {
            out += "<tr>";
            for c in r {
                let class = if matches!(c, Cell::Text(_) | Cell::Code(_)) {
                    ""
                } else {
                    " class=\"n\""
                };
                let _ = write!(out, "<td{class}>{}</td>", escape(&c.table()));
            }
            out += "</tr>\n";
        }
        out + "</table>\n"
    }
}

/// Output format of a subcommand's data on stdout.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text tables with a heading and notes.
    Table,
    /// The main frame as comma-separated values with a header row.
    Csv,
    /// Everything the run measured, as one JSON document.
    Json,
}

/// Everything one subcommand run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// File stem of the JSON document (`<name>.json`).
    pub name: String,
    /// Heading printed above the tables.
    pub heading: String,
    /// Frames; the first is the main one (the CSV on stdout).
    pub frames: Vec<Frame>,
    /// Plots, each drawn from one of the frames.
    pub plots: Vec<Plot>,
    /// Lines printed under the tables (conclusions, horizons, divergence).
    pub notes: Vec<String>,
    /// The full structured result.
    pub json: serde_json::Value,
}

impl Outcome {
    /// Render for stdout.
    pub fn render(&self, format: Format) -> Result<String> {
        Ok(match format {
            Format::Json => serde_json::to_string_pretty(&self.json)? + "\n",
            Format::Csv => self.frames.first().map(Frame::csv).unwrap_or_default(),
            Format::Table => {
                let mut out = String::new();
                if !self.heading.is_empty() {
                    out += &self.heading;
                    out += "\n\n";
                }
                for (k, f) in self.frames.iter().enumerate() {
                    if k > 0 || !f.title.is_empty() {
                        if k > 0 {
                            out.push('\n');
                        }
                        if !f.title.is_empty() {
                            out += &f.title;
                            out += "\n\n";
                        }
                    }
                    out += &f.table();
                }
                for n in &self.notes {
                    out.push('\n');
                    out += n;
                }
                if !self.notes.is_empty() {
                    out.push('\n');
                }
                out
            }
        })
    }

    /// Write `<name>.json`, each frame's CSV and each plot's SVG into `dir`.
    pub fn save(&self, dir: &OutDir) -> Result<Vec<PathBuf>> {
        let mut written = vec![dir.write(
            &format!("{}.json", self.name),
            (serde_json::to_string_pretty(&self.json)? + "\n").as_bytes(),
        )?];
        for f in &self.frames {
            written.push(dir.write(&format!("{}.csv", f.name), f.csv().as_bytes())?);
        }
        for p in &self.plots {
            written.push(dir.write(&format!("{}.svg", p.name), p.svg().as_bytes())?);
        }
        Ok(written)
    }
}

/// An output directory; every file in it is written to a temporary name first and renamed into place, so a
/// reader never sees half a file and a failed run leaves none behind.
#[derive(Clone, Debug)]
pub struct OutDir {
    path: PathBuf,
}

impl OutDir {
    /// Check that `path` is, or can become, a writable directory, without creating anything: a run that
    /// fails later leaves no trace.
    pub fn check(path: &Path) -> Result<OutDir> {
        if path.as_os_str().is_empty() {
            bail!("--out: empty path");
        }
        let mut existing = path;
        while !existing.exists() {
            match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => existing = p,
                _ => {
                    existing = Path::new(".");
                    break;
                }
            }
        }
        if !existing.is_dir() {
            bail!(
                "--out {}: {} is not a directory",
                path.display(),
                existing.display()
            );
        }
        if fs::metadata(existing).is_ok_and(|m| m.permissions().readonly()) {
            bail!(
                "--out {}: {} is read-only",
                path.display(),
                existing.display()
            );
        }
        Ok(OutDir {
            path: path.to_path_buf(),
        })
    }

    /// Check `path` and create it (and its parents).
    pub fn create(path: &Path) -> Result<OutDir> {
        let d = OutDir::check(path)?;
        d.ensure()?;
        Ok(d)
    }

    fn ensure(&self) -> Result<()> {
        fs::create_dir_all(&self.path)
            .with_context(|| format!("--out {}: cannot create the directory", self.path.display()))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `name` atomically (creating the directory first if needed).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        self.ensure()?;
        let target = self.path.join(name);
        write_atomic(&target, bytes)?;
        Ok(target)
    }
}

/// Write a file through a temporary sibling and a rename; on any error the temporary file is removed.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = target
        .file_name()
        .with_context(|| format!("{}: not a file name", target.display()))?;
    let tmp = target.with_file_name(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", target.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_render_in_every_format() {
        let mut f = Frame::new("t", "a test", &["name", "x", "n"]);
        f.push(vec!["a,b".into(), 0.5.into(), 3usize.into()]);
        f.push(vec!["c".into(), f64::NAN.into(), Cell::None]);
        assert_eq!(f.csv(), "name,x,n\n\"a,b\",5e-1,3\nc,NaN,\n");
        assert_eq!(
            f.json().to_string(),
            r#"[{"n":3,"name":"a,b","x":0.5},{"n":null,"name":"c","x":null}]"#
        );
        assert!(f.table().contains("NaN"));
        assert!(f.html().contains("<td>a,b</td>"));
    }

    #[test]
    fn out_dirs_are_checked_before_anything_is_created() {
        let base = std::env::temp_dir().join(format!("gradscope-check-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let file = base.join("file");
        fs::write(&file, b"x").unwrap();
        let e = OutDir::check(&file.join("sub")).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let d = OutDir::check(&base.join("a/b")).unwrap();
        assert!(!base.join("a").exists());
        d.write("x.txt", b"1").unwrap();
        assert!(base.join("a/b/x.txt").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn atomic_writes_leave_nothing_behind_on_failure() {
        let dir = std::env::temp_dir().join(format!("gradscope-out-{}", std::process::id()));
        let out = OutDir::create(&dir).unwrap();
        out.write("a.txt", b"hello").unwrap();
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"hello");
        // A directory where the file should go makes the rename fail.
        fs::create_dir_all(dir.join("b.txt")).unwrap();
        fs::write(dir.join("b.txt").join("x"), b"").unwrap();
        assert!(out.write("b.txt", b"x").is_err());
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
