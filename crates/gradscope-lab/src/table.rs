//! Plain-text table rendering.

use std::fmt::Write;

/// A table: a header row and data rows of already formatted cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Rows; each has as many cells as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and no rows.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row.
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    /// Render with aligned columns: text left, numbers right.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            let cells: Vec<String> = row
                .iter()
                .zip(&width)
                .map(|(c, &w)| {
                    if c.parse::<f64>().is_ok() || c.ends_with('%') {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        };
        line(&mut out, &self.header);
        let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        let _ = writeln!(out, "{}", rule.join("  "));
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// A number with about four significant digits: plain notation for magnitudes in `[1e-3, 1e5)` (and 0),
/// scientific otherwise.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 || (1e-3..1e5).contains(&a) {
        let digits = if a == 0.0 {
            0
        } else {
            (3 - a.log10().floor() as i32).clamp(0, 6) as usize
        };
        let s = format!("{x:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(["name", "value"]);
        t.push(["a", "1.5"]);
        t.push(["long name", "10"]);
        assert_eq!(num(-32768.0), "-32768");
        assert_eq!(num(0.99996948), "1");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1.52587890625e-5), "1.526e-5");
        assert_eq!(num(0.0), "0");
        assert_eq!(
            t.render(),
            "name       value\n---------  -----\na            1.5\nlong name     10\n"
        );
    }
}
