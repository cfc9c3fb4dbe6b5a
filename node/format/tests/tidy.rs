//! Tidy: rules a linter cannot check. The pure crates use no I/O, clock, threads or runtime;
//! every Rust file starts with a `//!` line; every golden test a format document names
//! exists in the code.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                // `vendor`: third-party code kept as published (gateway/vendor).
                "target" | "corpus" | "artifacts" | "coverage" | "vendor"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Crates that must stay pure (no I/O, no clock, no runtime).
const PURE_CRATES: &[&str] = &[
    "node/format/src",
    "node/proto/src",
    "node/core/src",
    "gateway/kafka/src",
];

const FORBIDDEN_IN_PURE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::io::",
    "std::time",
    "SystemTime",
    "Instant::",
    "std::thread",
    "std::env",
    "tokio",
    "glommio",
    "quinn",
    "println!",
    "eprintln!",
];

/// Exact lines allowed in spite of `FORBIDDEN_IN_PURE`, with the file they may appear in:
/// the codec crates stream through `Read`/`Write` over slices and `Vec`s, which is no I/O.
const ALLOWED_IN_PURE: &[(&str, &str)] = &[(
    "node/format/src/compression.rs",
    "use std::io::{Read, Write};",
)];

#[test]
fn pure_crates_do_no_io_and_read_no_clock() {
    let root = root();
    let mut problems = Vec::new();
    for dir in PURE_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        assert!(!files.is_empty(), "no sources under {dir}");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if ALLOWED_IN_PURE
                    .iter()
                    .any(|(allowed_file, allowed)| file.ends_with(allowed_file) && line == *allowed)
                {
                    continue;
                }
                for word in FORBIDDEN_IN_PURE {
                    if code.contains(word) {
                        problems.push(format!("{}:{}: {word}", file.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "pure crates must not use:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_rust_file_starts_with_a_module_doc_and_has_no_dbg() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["node", "gateway", "bench", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut problems = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{}: does not start with a //! line",
                file.display()
            ));
        }
        if text.contains(concat!("dbg", "!(")) {
            problems.push(format!(
                "{}: a debug-print macro is left in",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_golden_test_named_in_the_docs_exists() {
    let root = root();
    let mut sources = String::new();
    let mut files = Vec::new();
    rust_files(&root.join("node"), &mut files);
    for file in files {
        sources.push_str(&fs::read_to_string(file).unwrap());
    }
    let docs = [
        "docs/format/record-batch.md",
        "docs/format/segment.md",
        "docs/format/index.md",
        "docs/protocol.md",
    ];
    for doc in docs {
        let text = fs::read_to_string(root.join(doc)).unwrap();
        let names: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("golden_"))
            .collect();
        assert!(!names.is_empty(), "{doc} names no golden test");
        for name in names {
            assert!(
                sources.contains(&format!("fn {name}(")),
                "{doc} names {name}, which does not exist"
            );
        }
    }
}
