//! The documentation's links: every relative link in the book (`docs/src`), the README, the
//! changelog and BENCHMARKS.md leads to a file that exists, and a link to a heading
//! (`page.md#heading`) to a heading that page has. Links to the web are not followed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("README.md"),
        root().join("CHANGELOG.md"),
        root().join("BENCHMARKS.md"),
    ];
    let mut dirs = vec![root().join("docs/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The text of a Markdown file outside its fenced code blocks and inline code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                } else if !in_code {
                    out.push(c);
                }
            }
            out.push('\n');
        }
    }
    out
}

/// The targets of a file's links, `[text](target)`, and of its mdBook includes,
/// `{{#include target}}`.
fn targets(text: &str) -> Vec<String> {
    let mut found = vec![];
    let prose = prose(text);
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let end = rest.find([')', ' ']).unwrap_or(rest.len());
        found.push(rest[..end].to_owned());
    }
    // Includes are written in code spans' reach too: look at the whole text.
    let mut rest = text;
    while let Some(at) = rest.find("{{#include ") {
        rest = &rest[at + "{{#include ".len()..];
        let end = rest.find("}}").expect("an include ends with }}");
        found.push(rest[..end].trim().to_owned());
    }
    found
}

/// The anchors of a Markdown file's headings, as mdBook and GitHub make them: lower case,
/// punctuation other than `-` and `_` dropped, spaces turned into `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let anchor: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        found.insert(anchor);
    }
    found
}

fn broken_links(document: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(document).unwrap();
    let mut broken = vec![];
    for target in targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let file = match path {
            "" => document.to_path_buf(),
            path => document.parent().unwrap().join(path),
        };
        if !file.exists() {
            broken.push(format!("{target}: no such file"));
            continue;
        }
        if let Some(anchor) = anchor
            && file.extension().is_some_and(|e| e == "md")
            && !anchors(&std::fs::read_to_string(&file).unwrap()).contains(anchor)
        {
            broken.push(format!("{target}: no such heading"));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let documents = documents();
    assert!(
        documents.len() > 20,
        "the book's pages are not there: {documents:?}"
    );
    let mut broken = vec![];
    for document in &documents {
        for link in broken_links(document) {
            broken.push(format!(
                "{}: {link}",
                document.strip_prefix(root()).unwrap_or(document).display()
            ));
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The checker itself finds what it is for: a missing file, a missing heading.
#[test]
fn the_link_check_finds_a_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other.md"), "# A heading\n").unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "# Page\n[fine](other.md#a-heading) [here](#page) `[code](nowhere.md)`\n\
         [gone](missing.md) [no heading](other.md#another)\n\
         ```\n[fenced](nowhere.md)\n```\n",
    )
    .unwrap();
    assert_eq!(
        broken_links(&page),
        [
            "missing.md: no such file",
            "other.md#another: no such heading"
        ]
    );
}
