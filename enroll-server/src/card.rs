//! The customer card (お客様カード): a printed grid of random digits, columns ア–ク (A–H in the
//! API) and rows 1–5. A master whose contract confirms with a card gives the digits of two
//! cells the service picks (確認用パスワード) instead of a static confirmation password.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Column labels as printed.
pub const COLUMNS_JA: [&str; 8] = ["ア", "イ", "ウ", "エ", "オ", "カ", "キ", "ク"];
/// Column labels in the API.
pub const COLUMNS: [char; 8] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'];
/// Rows.
pub const ROWS: usize = 5;

/// A card: one digit per cell.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Card {
    digits: [[u8; 8]; ROWS],
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Card(..)")
    }
}

/// A uniformly random number below `n`, from the system's CSPRNG.
fn below(n: u8) -> Result<u8, crate::error::WebError> {
    let limit = u8::MAX - u8::MAX % n;
    loop {
        let mut byte = [0u8; 1];
        aws_lc_rs::rand::fill(&mut byte).map_err(|e| crate::error::WebError::internal("random", e))?;
        if byte[0] < limit {
            return Ok(byte[0] % n);
        }
    }
}

/// A cell's label in the API (`C4`), or `None` when it is not one.
fn parse_cell(label: &str) -> Option<(usize, usize)> {
    let mut chars = label.chars();
    let first = chars.next()?.to_ascii_uppercase();
    let column = COLUMNS.iter().position(|c| *c == first)?;
    let row: usize = chars.as_str().parse().ok()?;
    (1..=ROWS).contains(&row).then(|| (column, row - 1))
}

/// How a cell is printed and asked on the pages: `ウ4`.
pub fn label_ja(cell: &str) -> String {
    match parse_cell(cell) {
        Some((column, row)) => format!("{}{}", COLUMNS_JA[column], row + 1),
        None => cell.to_owned(),
    }
}

impl Card {
    /// A new card of random digits.
    pub fn generate() -> Result<Self, crate::error::WebError> {
        let mut digits = [[0u8; 8]; ROWS];
        for row in &mut digits {
            for cell in row.iter_mut() {
                *cell = below(10)?;
            }
        }
        Ok(Self { digits })
    }

    /// Its 40 digits, row by row (what is sealed at rest).
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.digits.iter().flatten().copied().collect())
    }

    /// A card from [`Card::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 8 * ROWS || bytes.iter().any(|&d| d > 9) {
            return None;
        }
        let mut digits = [[0u8; 8]; ROWS];
        for (i, d) in bytes.iter().enumerate() {
            digits[i / 8][i % 8] = *d;
        }
        Some(Self { digits })
    }

    /// Whether `answers` give exactly the digits of `cells` (each one digit), compared without
    /// stopping at the first difference.
    pub fn check(&self, cells: &[String], answers: &std::collections::BTreeMap<String, String>) -> bool {
        if answers.len() != cells.len() {
            return false;
        }
        let mut right = true;
        for cell in cells {
            let expected = parse_cell(cell).map(|(c, r)| self.digits[r][c]);
            let given = answers.get(cell).and_then(|a| {
                let a = a.trim();
                (a.len() == 1).then(|| a.bytes().next()).flatten().filter(u8::is_ascii_digit).map(|b| b - b'0')
            });
            right &= matches!((expected, given), (Some(e), Some(g)) if e == g);
        }
        right
    }

    /// The printable card, SVG: the login ID, the columns ア–ク (A–H) and rows 1–5.
    pub fn svg(&self, login_id: &str) -> String {
        let (cell, left, top) = (44, 40, 70);
        let width = left + cell * 8 + 20;
        let height = top + cell * (ROWS + 1) + 30;
        let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#fff\" stroke=\"#8c1d2c\" stroke-width=\"3\"/>\n\
             <text x=\"{left}\" y=\"30\" font-size=\"18\">お客様カード / Customer card</text>\n\
             <text x=\"{left}\" y=\"52\" font-size=\"14\">ログインID / login ID: {}</text>\n",
            escape(login_id)
        );
        for (c, label) in COLUMNS_JA.iter().enumerate() {
            let x = left + cell * c + cell / 2;
            out.push_str(&format!(
                "<text x=\"{x}\" y=\"{}\" font-size=\"15\" text-anchor=\"middle\">{label} ({})</text>\n",
                top + cell / 2 + 5,
                COLUMNS[c]
            ));
        }
        for (r, row) in self.digits.iter().enumerate() {
            let y = top + cell * (r + 1);
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
                left / 2,
                y + cell / 2 + 5,
                r + 1
            ));
            for (c, digit) in row.iter().enumerate() {
                let x = left + cell * c;
                out.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"none\" stroke=\"#1d2733\"/>\
                     <text x=\"{}\" y=\"{}\" font-size=\"22\" font-family=\"monospace\" text-anchor=\"middle\">{digit}</text>\n",
                    x + cell / 2,
                    y + cell / 2 + 8
                ));
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

impl Card {
    /// The printable card, PDF (one page): the same grid as [`Card::svg`]. Latin text and digits
    /// are in Helvetica; the Japanese labels use the standard Japanese font HeiseiKakuGo-W5
    /// with the UniJIS-UCS2-H encoding, which PDF readers supply (no font is embedded).
    pub fn pdf(&self, login_id: &str) -> Vec<u8> {
        let (cell, left, top) = (40.0_f32, 70.0_f32, 220.0_f32);
        let escape = |s: &str| s.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
        let ucs2 = |s: &str| s.encode_utf16().map(|u| format!("{u:04X}")).collect::<String>();
        let mut content = String::new();
        content.push_str(&format!("BT /F2 16 Tf {left} 258 Td <{}> Tj ET\n", ucs2("お客様カード")));
        content.push_str(&format!("BT /F1 12 Tf {} 258 Td (/ Customer card) Tj ET\n", left + 105.0));
        content.push_str(&format!("BT /F1 11 Tf {left} 242 Td (login ID: {}) Tj ET\n", escape(login_id)));
        for (c, label) in COLUMNS_JA.iter().enumerate() {
            let x = left + cell * c as f32 + 8.0;
            content.push_str(&format!("BT /F2 12 Tf {x} {} Td <{}> Tj ET\n", top + 8.0, ucs2(label)));
            content.push_str(&format!("BT /F1 9 Tf {} {} Td (\\({}\\)) Tj ET\n", x + 13.0, top + 8.0, COLUMNS[c]));
        }
        for (r, row) in self.digits.iter().enumerate() {
            let y = top - cell * (r + 1) as f32;
            content.push_str(&format!("BT /F1 12 Tf {} {} Td ({}) Tj ET\n", left - 20.0, y + 14.0, r + 1));
            for (c, digit) in row.iter().enumerate() {
                let x = left + cell * c as f32;
                content.push_str(&format!("{x} {y} {cell} {cell} re S\n"));
                content.push_str(&format!("BT /F3 18 Tf {} {} Td ({digit}) Tj ET\n", x + 14.0, y + 13.0));
            }
        }
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 420 280] /Contents 4 0 R \
             /Resources << /Font << /F1 5 0 R /F2 6 0 R /F3 9 0 R >> >> >>"
                .to_owned(),
            format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
            "<< /Type /Font /Subtype /Type0 /BaseFont /HeiseiKakuGo-W5 /Encoding /UniJIS-UCS2-H \
             /DescendantFonts [7 0 R] >>"
                .to_owned(),
            "<< /Type /Font /Subtype /CIDFontType0 /BaseFont /HeiseiKakuGo-W5 \
             /CIDSystemInfo << /Registry (Adobe) /Ordering (Japan1) /Supplement 2 >> /FontDescriptor 8 0 R >>"
                .to_owned(),
            "<< /Type /FontDescriptor /FontName /HeiseiKakuGo-W5 /Flags 4 /FontBBox [-92 -250 1010 922] \
             /ItalicAngle 0 /Ascent 752 /Descent -221 /CapHeight 737 /StemV 114 >>"
                .to_owned(),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Courier-Bold /Encoding /WinAnsiEncoding >>".to_owned(),
        ];
        let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
        let mut offsets = Vec::with_capacity(objects.len());
        for (i, object) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for offset in offsets {
            out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
        );
        out
    }
}

/// Two distinct random cells to ask for.
pub fn challenge() -> Result<[String; 2], crate::error::WebError> {
    let first = usize::from(below(8 * ROWS as u8)?);
    let mut second = first;
    while second == first {
        second = usize::from(below(8 * ROWS as u8)?);
    }
    let name = |i: usize| format!("{}{}", COLUMNS[i % 8], i / 8 + 1);
    Ok([name(first), name(second)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn cells_are_checked_exactly() {
        let card = Card::from_bytes(&(0..40).map(|i| (i % 10) as u8).collect::<Vec<_>>()).expect("card");
        // C1 is row 1, column 3: digit 2; F4 is row 4, column 6: index 29, digit 9.
        let cells = vec!["C1".to_owned(), "F4".to_owned()];
        let answer =
            |a: &str, b: &str| BTreeMap::from([("C1".to_owned(), a.to_owned()), ("F4".to_owned(), b.to_owned())]);
        assert!(card.check(&cells, &answer("2", "9")));
        assert!(!card.check(&cells, &answer("2", "8")));
        assert!(!card.check(&cells, &answer("29", "9")));
        assert!(!card.check(&cells, &answer("", "9")));
        assert!(!card.check(&cells, &BTreeMap::from([("C1".to_owned(), "2".to_owned())])), "both cells");
        let mut extra = answer("2", "9");
        extra.insert("A1".into(), "0".into());
        assert!(!card.check(&cells, &extra), "no other cells");
        assert!(!card.check(&["Z9".to_owned(), "F4".to_owned()], &answer("2", "9")));
        assert_eq!(label_ja("C1"), "ウ1");
        assert_eq!(Card::from_bytes(&card.to_bytes()), Some(card.clone()));
        assert!(Card::from_bytes(&[10; 40]).is_none());
        // Found by the fuzzer: row 0 underflowed.
        for bad in ["A0", "C6", "I1", "A", "", "1A", "A-1", "ア1"] {
            assert_eq!(parse_cell(bad), None, "{bad}");
        }
        assert!(!card.check(&["A0".to_owned(), "F4".to_owned()], &answer("2", "9")));
    }

    #[test]
    fn challenges_are_two_different_cells_on_the_card() {
        for _ in 0..200 {
            let [a, b] = challenge().expect("challenge");
            assert_ne!(a, b);
            assert!(parse_cell(&a).is_some() && parse_cell(&b).is_some(), "{a} {b}");
        }
    }
}
