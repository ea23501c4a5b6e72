//! What the OTP features parse from outside: a PSKC file of hardware-token seeds (plain, or
//! encrypted with a known pre-shared key), a typed code, customer-card answers and an
//! allowed-names entry. The first byte picks which; the rest is the input.
use std::collections::BTreeMap;

const PSK: [u8; 16] = *b"inkan fuzz psk!!";

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&kind, rest)) = data.split_first() else { return };
        let Ok(text) = std::str::from_utf8(rest) else { return };
        match kind % 4 {
            0 => {
                let _ = enroll_server::pskc::parse(text, Some(&PSK));
                let _ = enroll_server::pskc::parse(text, None);
            }
            1 => {
                let _ = enroll_server::otp::parse_code(text, 6);
                let _ = enroll_server::otp::parse_code(text, 8);
            }
            2 => {
                let card = enroll_server::card::Card::from_bytes(&[7; 40]).expect("a card");
                let answers: BTreeMap<String, String> = text
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let cells: Vec<String> = answers.keys().cloned().collect();
                let _ = card.check(&cells, &answers);
                for cell in &cells {
                    let _ = enroll_server::card::label_ja(cell);
                }
            }
            _ => {
                let _ = text.parse::<pki::names::AllowedName>();
            }
        }
    });
}
