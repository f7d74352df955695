//! Plain aligned tables, as `cilium` and `kubectl` print them.

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let width = cell.lines().map(str::len).max().unwrap_or(0);
                widths[i] = widths[i].max(width);
            }
        }
        let line = |cells: &[String]| {
            // A cell may hold several lines (e.g. one label per line).
            let height = cells.iter().map(|c| c.lines().count().max(1)).max().unwrap_or(1);
            for l in 0..height {
                let parts: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{:<w$}", c.lines().nth(l).unwrap_or(""), w = widths[i]))
                    .collect();
                println!("{}", parts.join("   ").trim_end());
            }
        };
        line(&self.header);
        for row in &self.rows {
            line(row);
        }
    }
}
