//! Splitting user input into PEM blocks so errors can name the block that is wrong.
//!
//! `pem::parse_many` fails as a whole and cannot say which block is broken. We only locate where each
//! block starts and hand each piece to `pem::parse`, which does all framing and base64 work.

const BEGIN_MARKER: &str = "-----BEGIN ";

/// Each block from one `-----BEGIN ` to the next, decoded by the `pem` crate. Text before the first
/// block and between blocks (for example OpenSSL's `subject=` lines) is ignored, as `pem` does.
pub(crate) fn split(input: &str) -> Vec<Result<pem::Pem, pem::PemError>> {
    let starts: Vec<usize> = input.match_indices(BEGIN_MARKER).map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(input.len());
            pem::parse(&input[start..end])
        })
        .collect()
}

/// How many blocks the input claims to have, counted before any decoding so an absurd input is
/// rejected cheaply.
pub(crate) fn count(input: &str) -> usize {
    input.matches(BEGIN_MARKER).count()
}

/// A reason a person can act on, instead of `pem`'s terse error names.
pub(crate) fn describe_error(err: &pem::PemError) -> String {
    match err {
        pem::PemError::MalformedFraming | pem::PemError::MissingEndTag => {
            "the -----BEGIN line has no matching -----END line".to_string()
        }
        pem::PemError::MissingBeginTag => "the -----BEGIN line has no label".to_string(),
        pem::PemError::MismatchedTags(begin, end) => {
            format!("it begins with \"{begin}\" but ends with \"{end}\"")
        }
        pem::PemError::MissingData => "the block is empty".to_string(),
        pem::PemError::InvalidData(e) => format!("the body is not valid base64 ({e})"),
        pem::PemError::InvalidHeader(_) => "it has a malformed header line".to_string(),
        pem::PemError::NotUtf8(_) => "it contains bytes that are not UTF-8 text".to_string(),
    }
}

/// PEM labels that carry private keys; used to give a pointed hint when one shows up in a chain.
pub(crate) fn is_private_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

/// Encode DER blocks the same way everywhere (LF line endings, 64-column base64).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
