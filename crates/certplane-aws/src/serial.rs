//! Certificate serial numbers as AWS writes them, compared by value.
//!
//! certplane writes serials as lowercase hex. Real ACM's `DescribeCertificate` writes colon-separated
//! hex (`3a:4f:…`); moto writes a decimal string. Both are reduced to the big-endian magnitude
//! without leading zero bytes before comparing.

/// The magnitude of a hex serial (`3a4f…`, `3A:4F:…`), or `None` if it is not hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() {
        return None;
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    hex::decode(padded).ok().map(strip)
}

/// The magnitude of a decimal serial, or `None` if it is not decimal.
pub fn from_decimal(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Little-endian base-256 digits, multiplied by ten and added to, one decimal digit at a time.
    let mut out: Vec<u8> = Vec::new();
    for d in text.bytes().map(|b| b - b'0') {
        let mut carry = d as u32;
        for byte in out.iter_mut() {
            let v = *byte as u32 * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            out.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    out.reverse();
    Some(strip(out))
}

/// The magnitude of a serial as ACM reports it: colon hex when it has colons (real ACM), else
/// decimal (moto). A single-byte serial from real ACM has no colon but also never more than two hex
/// digits, so two characters or fewer are read as hex when they are not decimal-only.
pub fn from_acm(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.contains(':') {
        return from_hex(text);
    }
    from_decimal(text).or_else(|| from_hex(text))
}

/// A serial as AWS Private CA's RevokeCertificate takes it: colon-separated upper-case hex, two
/// digits per byte of the magnitude (`0A:3F:…`). Input that is not hex is passed through unchanged
/// for AWS to refuse.
pub fn colon_hex(serial_hex: &str) -> String {
    match from_hex(serial_hex) {
        Some(bytes) if !bytes.is_empty() => bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        Some(_) => "00".into(),
        None => serial_hex.to_string(),
    }
}

fn strip(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Does ACM's serial equal certplane's (hex) serial?
pub fn same_serial(certplane_hex: &str, acm: &str) -> bool {
    match (from_hex(certplane_hex), from_acm(acm)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_serials_are_colon_hex_per_byte() {
        assert_eq!(colon_hex("0123abcd"), "01:23:AB:CD");
        assert_eq!(colon_hex("00ff"), "FF");
        assert_eq!(colon_hex("abc"), "0A:BC");
        assert_eq!(colon_hex("not hex"), "not hex");
    }

    #[test]
    fn the_three_spellings_of_one_serial_are_equal() {
        // 0x0123456789abcdef0011 = 5373003642731685150737 in decimal.
        let hex = "0123456789abcdef0011";
        assert!(same_serial(hex, "01:23:45:67:89:ab:cd:ef:00:11"));
        assert!(same_serial(hex, "1:23:45:67:89:AB:CD:EF:00:11"));
        assert!(same_serial(hex, "5373003642731685150737"));
        assert!(!same_serial(hex, "5373003642731685150738"));
        assert!(!same_serial(hex, "01:23:45:67:89:ab:cd:ef:00:12"));
        assert!(!same_serial(hex, ""));
        assert!(!same_serial("zz", "1"));
    }

    #[test]
    fn decimal_conversion_matches_known_values() {
        assert_eq!(from_decimal("0"), Some(vec![]));
        assert_eq!(from_decimal("255"), Some(vec![0xff]));
        assert_eq!(from_decimal("256"), Some(vec![0x01, 0x00]));
        assert_eq!(
            from_decimal("340282366920938463463374607431768211455"),
            Some(vec![0xff; 16])
        );
        assert_eq!(from_decimal("12a"), None);
    }
}
