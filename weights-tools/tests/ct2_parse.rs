//! The CTranslate2 `model.bin` reader on synthetic bytes: valid files of every binary
//! version, and every kind of corruption (truncation at each byte, bad sizes, bad strings).

use crate::common::*;
use amanuensis_weights_tools::ct2::{Ct2DType, Ct2Error, Ct2Model};

/// A small valid file: a float16 matrix, two scalars and an alias.
fn small_vars() -> Vec<Var> {
    vec![
        Var::float("a/weight", &[2, 3], F16, |i| i as f32 * 0.5 - 1.0),
        Var::i8("b/flag", -3),
        Var::i16("c/count", 300),
    ]
}

fn small_file(version: u32) -> Vec<u8> {
    ct2_bytes(
        version,
        ("WhisperSpec", 3),
        &small_vars(),
        &[("a/alias", "a/weight")],
    )
}

#[test]
fn tiny_valid_file_parses() {
    let bytes = small_file(6);
    let m = Ct2Model::parse(&bytes, "model.bin").expect("valid file");
    assert_eq!(m.binary_version, 6);
    assert_eq!(m.spec_name.as_deref(), Some("WhisperSpec"));
    assert_eq!(m.spec_revision, Some(3));
    assert_eq!(m.variables.len(), 3);

    let a = &m.variables[0];
    assert_eq!(a.name, "a/weight");
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.dtype, Ct2DType::F16);
    // 4 (version) + 2+12 (spec) + 4 (revision) + 4 (count) + 2+9 (name) + 1 (rank) + 8 (dims)
    // + 1 (dtype) + 4 (num_bytes) = 51.
    assert_eq!(a.offset, 51);
    assert_eq!(a.data, &small_vars()[0].payload[..]);
    assert_eq!(a.data.len(), 12);
    assert_eq!(a.num_elements(), 6);
    assert_eq!(a.scalar_int(), None);

    assert_eq!(m.variable("b/flag").unwrap().scalar_int(), Some(-3));
    assert_eq!(m.variable("c/count").unwrap().scalar_int(), Some(300));
    assert_eq!(m.variable("c/count").unwrap().dtype, Ct2DType::I16);

    assert_eq!(m.aliases.len(), 1);
    assert_eq!(m.alias_target("a/alias"), Some("a/weight"));
    assert!(
        m.variable("a/alias").is_none(),
        "an alias is not a stored variable"
    );
    assert_eq!(m.resolve("a/alias").unwrap().data, a.data);
    assert_eq!(m.payload_bytes(), 12 + 1 + 2);
}

#[test]
fn legacy_binary_versions_parse() {
    for version in 1..=6u32 {
        let bytes = small_file(version);
        let m = Ct2Model::parse(&bytes, "model.bin")
            .unwrap_or_else(|e| panic!("version {version}: {e}"));
        assert_eq!(m.binary_version, version);
        assert_eq!(m.spec_name.is_some(), version >= 2, "version {version}");
        assert_eq!(
            m.aliases.len(),
            usize::from(version >= 3),
            "version {version}"
        );
        let a = m.variable("a/weight").unwrap();
        // Versions 1..3 know only item sizes: a 2-byte item reads back as int16.
        let want = if version >= 4 {
            Ct2DType::F16
        } else {
            Ct2DType::I16
        };
        assert_eq!(a.dtype, want, "version {version}");
        assert_eq!(a.data, &small_vars()[0].payload[..], "version {version}");
        assert_eq!(m.variable("c/count").unwrap().scalar_int(), Some(300));
    }
}

#[test]
fn truncation_at_every_byte_is_an_error_never_a_panic() {
    let mut files = vec![
        ("small v6", small_file(6)),
        ("small v3", small_file(3)),
        ("small v1", small_file(1)),
    ];
    files.push(("tiny whisper", tiny_whisper_bytes(Tiny::default())));
    for (label, bytes) in files {
        assert!(
            Ct2Model::parse(&bytes, "model.bin").is_ok(),
            "{label}: full file must parse"
        );
        for len in 0..bytes.len() {
            match Ct2Model::parse(&bytes[..len], "model.bin") {
                Err(Ct2Error::Truncated {
                    offset,
                    needed,
                    left,
                    ..
                }) => {
                    assert!(offset <= len, "{label} cut at {len}: offset {offset}");
                    assert_eq!(left, len - offset, "{label} cut at {len}");
                    assert!(needed > left as u64, "{label} cut at {len}");
                }
                other => panic!("{label} cut at {len}: expected a truncation error, got {other:?}"),
            }
        }
    }
}

#[test]
fn truncation_message_names_offset_and_variable() {
    let bytes = small_file(6);
    // Cut 5 bytes into the 12-byte payload of 'a/weight', which starts at byte 51.
    let err = Ct2Model::parse(&bytes[..56], "model.bin").unwrap_err();
    assert_eq!(
        err.to_string(),
        "model.bin: truncated at byte 51 while reading payload of 'a/weight' (needs 12 bytes, 5 left)"
    );
    let err = Ct2Model::parse(&bytes[..49], "model.bin").unwrap_err();
    assert_eq!(
        err.to_string(),
        "model.bin: truncated at byte 47 while reading byte count of 'a/weight' (needs 4 bytes, 2 left)"
    );
}

#[test]
fn single_byte_corruption_never_panics() {
    let bytes = small_file(6);
    let mut errors = 0;
    for pos in 0..bytes.len() {
        for value in [0x00u8, 0x01, 0x7f, 0x80, 0xff, bytes[pos].wrapping_add(1)] {
            let mut b = bytes.clone();
            b[pos] = value;
            if Ct2Model::parse(&b, "model.bin").is_err() {
                errors += 1;
            }
        }
    }
    // Most positions are structural; payload bytes may change freely.
    assert!(
        errors > bytes.len(),
        "only {errors} corruptions were detected"
    );
}

#[test]
fn num_bytes_inconsistent_with_shape_is_an_error() {
    let mut vars = small_vars();
    vars[0].declared = Some(14); // 2x3 float16 is 12 bytes
    let bytes = ct2_bytes(6, ("WhisperSpec", 3), &vars, &[]);
    match Ct2Model::parse(&bytes, "model.bin") {
        Err(Ct2Error::SizeMismatch {
            name,
            declared,
            expected,
            offset,
            ..
        }) => {
            assert_eq!(name, "a/weight");
            assert_eq!(declared, 14);
            assert_eq!(expected, "12");
            assert_eq!(offset, 26, "offset of the variable's header");
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    // Same in the element-count format of versions 1..3.
    let bytes = ct2_bytes(3, ("WhisperSpec", 3), &vars, &[]);
    assert!(matches!(
        Ct2Model::parse(&bytes, "m"),
        Err(Ct2Error::SizeMismatch { declared: 28, .. })
    ));
}

#[test]
fn huge_sizes_are_errors_not_allocations() {
    // A byte count of u32::MAX that disagrees with the shape.
    let mut vars = small_vars();
    vars[0].declared = Some(u32::MAX);
    let bytes = ct2_bytes(6, ("WhisperSpec", 3), &vars, &[]);
    assert!(matches!(
        Ct2Model::parse(&bytes, "m"),
        Err(Ct2Error::SizeMismatch { declared, .. }) if declared == u64::from(u32::MAX)
    ));

    // A consistent but huge shape: the payload read fails against the bytes left.
    let v = Var {
        name: "big".into(),
        shape: vec![0x7fff_ffff],
        dtype: I16,
        payload: vec![1, 2, 3],
        declared: Some(0xffff_fffe),
    };
    let bytes = ct2_bytes(6, ("WhisperSpec", 3), &[v], &[]);
    match Ct2Model::parse(&bytes, "m") {
        Err(Ct2Error::Truncated {
            what, needed, left, ..
        }) => {
            assert_eq!(what, "payload of 'big'");
            assert_eq!(needed, 0xffff_fffe);
            assert_eq!(left, 3 + 4, "3 payload bytes and the 4-byte alias count");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }

    // A shape whose element count overflows 64 bits.
    let v = Var {
        name: "overflow".into(),
        shape: vec![u32::MAX; 5],
        dtype: F32,
        payload: vec![],
        declared: Some(4),
    };
    let bytes = ct2_bytes(6, ("WhisperSpec", 3), &[v], &[]);
    assert!(matches!(
        Ct2Model::parse(&bytes, "m"),
        Err(Ct2Error::SizeMismatch { expected, .. }) if expected == "more than 2^64"
    ));

    // A variable count far larger than the file: parsing stops at the first missing byte.
    let mut bytes = small_file(2);
    bytes[22..26].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Ct2Model::parse(&bytes, "m"),
        Err(Ct2Error::Truncated { what, .. }) if what == "length of name of variable #3"
    ));
}

/// `small_file(6)` with its first variable's name field replaced by `raw` (u16 length + bytes).
fn with_first_name(raw: &[u8]) -> Vec<u8> {
    let good = small_file(6);
    let mut b = good[..26].to_vec();
    b.extend_from_slice(raw);
    b.extend_from_slice(&good[26 + 2 + 9..]);
    b
}

#[test]
fn bad_strings_are_errors() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero length", [0u8, 0].to_vec(), "length 0"),
        (
            "no NUL",
            [9u8, 0].iter().chain(b"a/weightX").copied().collect(),
            "missing NUL terminator",
        ),
        (
            "embedded NUL",
            [9u8, 0].iter().chain(b"a/w\0ight\0").copied().collect(),
            "embedded NUL",
        ),
        (
            "bad UTF-8",
            [9u8, 0].iter().chain(b"a/w\xffight\0").copied().collect(),
            "not valid UTF-8",
        ),
    ];
    for (label, raw, reason_part) in cases {
        match Ct2Model::parse(&with_first_name(&raw), "model.bin") {
            Err(Ct2Error::BadString {
                offset,
                what,
                reason,
                ..
            }) => {
                assert_eq!(offset, 26, "{label}");
                assert_eq!(what, "name of variable #0", "{label}");
                assert!(reason.contains(reason_part), "{label}: {reason}");
            }
            other => panic!("{label}: expected BadString, got {other:?}"),
        }
    }
    // A length that runs past the end of the file.
    let err = Ct2Model::parse(&with_first_name(&[0xff, 0xff]), "model.bin").unwrap_err();
    assert!(
        matches!(&err, Ct2Error::Truncated { what, needed: 65535, .. } if what == "name of variable #0"),
        "{err:?}"
    );
    // A bad spec name.
    let mut b = small_file(6);
    b[4..6].copy_from_slice(&0u16.to_le_bytes());
    assert!(
        matches!(Ct2Model::parse(&b, "m"), Err(Ct2Error::BadString { what, .. }) if what == "spec name")
    );
}

#[test]
fn unsupported_versions_are_errors() {
    for version in [0u32, 7, 100, u32::MAX] {
        let mut b = small_file(6);
        b[..4].copy_from_slice(&version.to_le_bytes());
        match Ct2Model::parse(&b, "model.bin") {
            Err(e @ Ct2Error::UnsupportedVersion { .. }) => {
                assert_eq!(
                    e,
                    Ct2Error::UnsupportedVersion {
                        file: "model.bin".into(),
                        version
                    }
                );
                assert!(e
                    .to_string()
                    .contains(&format!("unsupported binary version {version}")));
            }
            other => panic!("version {version}: {other:?}"),
        }
    }
}

#[test]
fn unknown_dtype_and_item_size_are_errors() {
    let mut vars = small_vars();
    vars[0].dtype = 9;
    let b = ct2_bytes(6, ("WhisperSpec", 3), &vars, &[]);
    assert!(matches!(
        Ct2Model::parse(&b, "m"),
        Err(Ct2Error::UnknownDType {
            id: 9,
            offset: 46,
            ..
        })
    ));
    // Versions 1..3 store an item size; 3 bytes per item does not exist.
    let mut b = ct2_bytes(3, ("WhisperSpec", 3), &small_vars(), &[]);
    b[46] = 3;
    assert!(matches!(
        Ct2Model::parse(&b, "m"),
        Err(Ct2Error::UnknownItemSize { size: 3, .. })
    ));
}

#[test]
fn structural_errors_are_reported() {
    // Trailing garbage.
    let mut b = small_file(6);
    b.extend_from_slice(&[1, 2, 3]);
    let len = b.len();
    assert!(matches!(
        Ct2Model::parse(&b, "m"),
        Err(Ct2Error::TrailingBytes { count: 3, offset, .. }) if offset == len - 3
    ));
    // Duplicate variable.
    let mut vars = small_vars();
    vars.push(vars[1].clone());
    let b = ct2_bytes(6, ("WhisperSpec", 3), &vars, &[]);
    assert!(
        matches!(Ct2Model::parse(&b, "m"), Err(Ct2Error::DuplicateVariable { name, .. }) if name == "b/flag")
    );
    // Alias to nothing, alias shadowing a variable, alias defined twice.
    for (aliases, reason) in [
        (vec![("x", "missing")], "target is not a stored variable"),
        (vec![("b/flag", "a/weight")], "also a stored variable"),
        (vec![("x", "a/weight"), ("x", "b/flag")], "defined twice"),
    ] {
        let b = ct2_bytes(6, ("WhisperSpec", 3), &small_vars(), &aliases);
        match Ct2Model::parse(&b, "m") {
            Err(Ct2Error::BadAlias { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
            other => panic!("{aliases:?}: {other:?}"),
        }
    }
}

#[test]
fn tiny_whisper_file_round_trips() {
    let t = Tiny::default();
    let vars = tiny_whisper(t);
    let bytes = tiny_whisper_bytes(t);
    let m = Ct2Model::parse(&bytes, "model.bin").unwrap();
    assert_eq!(m.variables.len(), vars.len());
    for (got, want) in m.variables.iter().zip(&vars) {
        assert_eq!(got.name, want.name);
        assert_eq!(
            got.shape,
            want.shape.iter().map(|&d| d as usize).collect::<Vec<_>>()
        );
        assert_eq!(got.data, &want.payload[..], "{}", want.name);
        assert_eq!(&bytes[got.offset..got.offset + got.data.len()], got.data);
    }
}
