//! Plain-text tables: what `eval` and `bench` print on the terminal.

use std::fmt::Write as _;

/// `lines` (the header first) as text: every cell padded to its column's widest, aligned left
/// where `left` says so and right otherwise (also beyond `left`'s end), two spaces apart, with
/// no trailing spaces.
pub(crate) fn aligned(lines: &[Vec<String>], left: &[bool]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, (cell, &width)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if left.get(i).copied().unwrap_or(false) {
                let _ = write!(text, "{cell:<width$}");
            } else {
                let _ = write!(text, "{cell:>width$}");
            }
        }
        table.push_str(text.trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::aligned;

    #[test]
    fn columns_align_left_or_right_without_trailing_spaces() {
        let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let lines = [
            row(&["codec", "bpp", "note"]),
            row(&["webp", "0.25", "a"]),
            row(&["x", "1", ""]),
        ];
        let table = aligned(&lines, &[true, false, true]);
        assert_eq!(table, "codec   bpp  note\nwebp   0.25  a\nx         1\n");
    }
}
