//! `docs/cli.md` is the `spate` command reference generated from the clap definitions (every
//! command's `--help`), and this test keeps it from drifting: it fails when the generated part
//! differs from what the current binary prints. `SPATE_BLESS=1 cargo test -p spate-client
//! --test cli_doc` rewrites it (the hand-written part after the marker stays).

use std::path::Path;
use std::process::Command;

const MARKER: &str = "<!-- end of the generated reference -->";

/// `spate ARGS --help`, as a script (no terminal) sees it, without the environment's
/// defaults showing through.
fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(args)
        .arg("--help")
        .env_remove("SPATE_GATEWAY")
        .env_remove("SPATE_CA_CERT")
        .env_remove("SPATE_SERVER_NAME")
        .env_remove("SPATE_PROFILE")
        .env_remove("SPATE_LOG_FORMAT")
        .env_remove("SPATE_LOG_LEVEL")
        .env_remove("SPATE_METRICS")
        .env_remove("SPATE_METRICS_LISTEN")
        .env_remove("SPATE_GATEWAY_METRICS_LISTEN")
        .env_remove("COLUMNS")
        .output()
        .expect("spate runs");
    assert!(output.status.success(), "spate {args:?} --help failed");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The subcommands a help text lists (its `Commands:` section), without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

fn generate() -> String {
    let mut doc = String::from(
        "# `spate` command reference\n\n\
         Every command's `--help`, generated from the command definitions: \
         `SPATE_BLESS=1 cargo test -p spate-client --test cli_doc` rewrites this part, and the \
         test fails when it no longer matches the binary. Behaviour in more depth: \
         [clients.md](clients.md).\n",
    );
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = queue.first().cloned() {
        queue.remove(0);
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        let title = std::iter::once("spate")
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        doc.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
        for sub in subcommands(&text) {
            let mut child = path.clone();
            child.push(sub);
            queue.push(child);
        }
    }
    doc.push('\n');
    doc.push_str(MARKER);
    doc
}

#[test]
fn cli_reference_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let tail = current
        .split_once(MARKER)
        .map(|(_, tail)| tail.to_owned())
        .unwrap_or_default();
    let generated = generate();
    if std::env::var_os("SPATE_BLESS").is_some() {
        std::fs::write(&path, format!("{generated}{tail}")).expect("docs/cli.md written");
        return;
    }
    let (head, _) = current
        .split_once(MARKER)
        .expect("docs/cli.md has the end-of-reference marker");
    let expected = generated.trim_end_matches(MARKER);
    assert!(
        head == expected,
        "docs/cli.md is out of date with `spate --help`: run \
         `SPATE_BLESS=1 cargo test -p spate-client --test cli_doc` and commit the result"
    );
}
