use super::*;

const FINGERPRINT: &[u8] = b"2a20c173292963a33d2e01346cad193fdeaac4e1c5e9ce080d1e923bf620b159";
const SECRET: &[u8] = b"pretend this is a PKCS#8 private key";

fn kek(byte: u8) -> Kek {
    Kek::from_bytes([byte; 32])
}

/// Flip one hex digit in the middle of `hex_text`.
fn flip(hex_text: &str) -> String {
    let mut chars: Vec<char> = hex_text.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

#[test]
fn seal_then_open_round_trips() {
    let kek = kek(7);
    let sealed = seal(&kek, SECRET, FINGERPRINT).expect("seal");
    assert_eq!(sealed.v, SEALED_KEY_VERSION);
    assert_eq!(sealed.algorithm, "XChaCha20-Poly1305");
    assert_eq!(sealed.kek_id, kek.id());
    // 24-byte nonce + 32-byte key + 16-byte tag, in hex.
    assert_eq!(sealed.wrapped_data_key.len(), 2 * (24 + 32 + 16));
    assert_eq!(sealed.sealed_key.len(), 2 * (24 + SECRET.len() + 16));
    let opened = open(&kek, &sealed, FINGERPRINT).expect("open");
    assert_eq!(opened.as_slice(), SECRET);
}

#[test]
fn every_seal_uses_a_fresh_data_key_and_nonces() {
    let kek = kek(7);
    let a = seal(&kek, SECRET, FINGERPRINT).expect("seal");
    let b = seal(&kek, SECRET, FINGERPRINT).expect("seal");
    assert_ne!(a.wrapped_data_key, b.wrapped_data_key);
    assert_ne!(a.sealed_key, b.sealed_key);
}

#[test]
fn another_records_aad_does_not_open() {
    let kek = kek(7);
    let sealed = seal(&kek, SECRET, FINGERPRINT).expect("seal");
    let e = open(&kek, &sealed, b"another fingerprint").expect_err("wrong aad");
    assert!(matches!(e, PkiError::Unseal { .. }), "{e:?}");
    assert!(e.to_string().contains("belongs to another record"), "{e}");
}

#[test]
fn tampering_is_detected() {
    let kek = kek(7);
    let sealed = seal(&kek, SECRET, FINGERPRINT).expect("seal");

    let mut body = sealed.clone();
    body.sealed_key = flip(&body.sealed_key);
    assert!(matches!(
        open(&kek, &body, FINGERPRINT),
        Err(PkiError::Unseal { .. })
    ));

    let mut wrapped = sealed.clone();
    wrapped.wrapped_data_key = flip(&wrapped.wrapped_data_key);
    let e = open(&kek, &wrapped, FINGERPRINT).expect_err("tampered data key");
    assert!(
        e.to_string()
            .contains("wrapped data key failed authentication"),
        "{e}"
    );

    let mut short = sealed.clone();
    short.sealed_key.truncate(20);
    assert!(matches!(
        open(&kek, &short, FINGERPRINT),
        Err(PkiError::Unseal { .. })
    ));

    let mut not_hex = sealed.clone();
    not_hex.sealed_key = "zz".to_string();
    assert!(matches!(
        open(&kek, &not_hex, FINGERPRINT),
        Err(PkiError::Unseal { .. })
    ));

    let mut version = sealed.clone();
    version.v = 2;
    let e = open(&kek, &version, FINGERPRINT).expect_err("unknown version");
    assert!(
        e.to_string().contains("format version 2 is not supported"),
        "{e}"
    );

    let mut algorithm = sealed;
    algorithm.algorithm = "AES-256-GCM".to_string();
    assert!(matches!(
        open(&kek, &algorithm, FINGERPRINT),
        Err(PkiError::Unseal { .. })
    ));
}

#[test]
fn the_wrong_kek_is_named_not_reported_as_tampering() {
    let sealed = seal(&kek(7), SECRET, FINGERPRINT).expect("seal");
    let other = kek(8);
    let e = open(&other, &sealed, FINGERPRINT).expect_err("wrong kek");
    match &e {
        PkiError::WrongKek { expected, found } => {
            assert_eq!(expected, other.id());
            assert_eq!(found, kek(7).id());
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Forging the id does not help: the wrapped data key does not authenticate under this KEK.
    let mut forged = sealed;
    forged.kek_id = other.id().to_string();
    assert!(matches!(
        open(&other, &forged, FINGERPRINT),
        Err(PkiError::Unseal { .. })
    ));
}

#[test]
fn sealed_key_json_round_trips() {
    let kek = kek(9);
    let sealed = seal(&kek, SECRET, FINGERPRINT).expect("seal");
    let json = serde_json::to_string(&sealed).expect("json");
    for field in [
        "\"v\":1",
        "\"algorithm\"",
        "\"kek_id\"",
        "\"wrapped_data_key\"",
        "\"sealed_key\"",
    ] {
        assert!(json.contains(field), "{json}");
    }
    let back: SealedKey = serde_json::from_str(&json).expect("parse");
    assert_eq!(
        open(&kek, &back, FINGERPRINT).expect("open").as_slice(),
        SECRET
    );
}

#[test]
fn kek_id_is_a_short_hash_and_the_key_is_not_printed() {
    let kek = kek(1);
    assert_eq!(kek.id().len(), 16);
    assert!(kek.id().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(kek.id(), Kek::from_bytes([2; 32]).id());
    let debug = format!("{kek:?}");
    assert!(debug.contains(kek.id()) && debug.contains("<redacted>"));
    assert!(!debug.contains("0101"));
}

#[test]
fn kek_files_in_hex_and_base64_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = [0x5au8; 32];
    let expected = Kek::from_bytes(key);

    let hex_path = dir.path().join("kek.hex");
    std::fs::write(&hex_path, format!("  {}\n\n", hex::encode(key))).expect("write");
    assert_eq!(Kek::load(&hex_path).expect("hex").id(), expected.id());

    let upper_path = dir.path().join("kek.HEX");
    std::fs::write(&upper_path, hex::encode_upper(key)).expect("write");
    assert_eq!(
        Kek::load(&upper_path).expect("upper hex").id(),
        expected.id()
    );

    let b64_path = dir.path().join("kek.b64");
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    std::fs::write(&b64_path, format!("{b64}\n")).expect("write");
    assert_eq!(Kek::load(&b64_path).expect("base64").id(), expected.id());
}

#[test]
fn bad_kek_files_are_rejected_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("empty", Vec::new(), "the file is empty"),
        (
            "short-hex",
            hex::encode([1u8; 16]).into_bytes(),
            "decodes to 16 bytes",
        ),
        (
            "long-base64",
            base64::engine::general_purpose::STANDARD
                .encode([1u8; 48])
                .into_bytes(),
            "decodes to 48 bytes",
        ),
        (
            "words",
            b"correct horse battery staple".to_vec(),
            "64 hex characters",
        ),
        ("odd-hex", b"abc".to_vec(), "64 hex characters"),
        ("binary", vec![0xff; 32], "not text"),
    ];
    for (name, contents, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        let e = Kek::load(&path).expect_err(name);
        assert!(matches!(e, PkiError::InvalidKek { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(expected), "{name}: {e}");
        assert!(
            e.to_string().contains(name),
            "{name}: the path is named: {e}"
        );
    }
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'a'; 10_000]).expect("write");
    assert!(matches!(Kek::load(&big), Err(PkiError::InvalidKek { .. })));
    assert!(matches!(
        Kek::load(&dir.path().join("missing")),
        Err(PkiError::Io { .. })
    ));
}

#[test]
fn generated_kek_file_is_private_loadable_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kek");
    let generated = Kek::generate_file(&path).expect("generate");
    let loaded = Kek::load(&path).expect("load");
    assert_eq!(generated.id(), loaded.id());
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let e = Kek::generate_file(&path).expect_err("existing file");
    assert!(matches!(e, PkiError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(Kek::load(&path).expect("still there").id(), generated.id());
}
