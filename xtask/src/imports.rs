//! The import check: no cycle between the files of a crate (issue 14).
//!
//! Each `.rs` file under `crates/*/src` is a module (`a/mod.rs` and `a.rs` are `a`). A file
//! depends on the module a path in its code names (`crate::a::b`, `super::b`, `self::b`,
//! also inside `use` groups), resolved to the deepest module that exists; paths in comments
//! and in a file's `#[cfg(test)] mod tests` are not counted, nor are edges between a module
//! and its own ancestors or descendants (a parent declares its children and they see it).
//! A cycle is a strongly connected set of two or more modules. [`KNOWN_CYCLES`] lists the
//! cycles not yet broken, each with why; any other fails the check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};

use crate::cmd;

/// Cycles left, by crate and module names (sorted), with why they are still there.
pub(crate) const KNOWN_CYCLES: &[(&str, &[&str], &str)] = &[];

/// A module path inside a crate (`["device", "driver"]`; empty for the crate root).
type Module = Vec<String>;

/// Runs the check over every crate under `crates/`.
pub(crate) fn check() -> anyhow::Result<()> {
    let crates = cmd::root().join("crates");
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&crates)
        .with_context(|| format!("reading {}", crates.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let files = read_modules(&src)?;
        let cycles = cycles(&edges(&files));
        if cycles.is_empty() {
            println!("{name}: no import cycle between its files");
        }
        for cycle in cycles {
            let names: Vec<String> = cycle.iter().map(show).collect();
            match KNOWN_CYCLES
                .iter()
                .find(|(c, mods, _)| *c == name && *mods == names.as_slice())
            {
                Some((_, _, why)) => {
                    println!("{name}: known cycle {} ({why})", names.join(" <-> "));
                }
                None => failures.push(format!("{name}: {}", names.join(" <-> "))),
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "import cycles between files (break them, or list them with why in \
             xtask/src/imports.rs):\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

/// Every module of the crate whose sources are in `src`, with its code.
fn read_modules(src: &Path) -> anyhow::Result<BTreeMap<Module, String>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut module: Module = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
            {
                module.pop();
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.insert(module, code_of(&text));
        }
    }
    Ok(out)
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module to the modules its code names (not its ancestors or descendants).
fn edges(files: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in files {
        let deps = out.entry(module.clone()).or_default();
        for path in paths(code) {
            let Some(absolute) = absolute(module, &path) else {
                continue;
            };
            // The deepest module the path names.
            let target = (0..=absolute.len())
                .rev()
                .map(|k| absolute[..k].to_vec())
                .find(|m| files.contains_key(m))
                .unwrap_or_default();
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                deps.insert(target);
            }
        }
    }
    out
}

/// `path` (`["super", "events", "DeviceEvent"]`) from inside `module`, from the crate root.
fn absolute(module: &Module, path: &[String]) -> Option<Module> {
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let mut rest = rest;
    while let Some(("super", more)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
        base.pop()?;
        rest = more;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every path starting with `crate::`, `super::` or `self::` in `code`, with the groups of
/// `use a::{b, c::d}` expanded (one level is enough here).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let at = ["crate::", "super::", "self::"]
            .iter()
            .filter_map(|k| code[i..].find(k).map(|p| (i + p, *k)))
            .min_by_key(|(p, _)| *p);
        let Some((start, _)) = at else { break };
        // Not the tail of an identifier (`my_crate::`, `$crate::`).
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        };
        let mut end = start;
        while end < code.len() {
            let b = bytes[end];
            if b.is_ascii_alphanumeric() || b == b'_' || b == b':' {
                end += 1;
            } else {
                break;
            }
        }
        if boundary {
            let head: Vec<String> = code[start..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if code[end..].starts_with('{') {
                let close = code[end..].find('}').map_or(code.len(), |c| end + c);
                for item in code[end + 1..close].split(',') {
                    let item = item.trim().trim_start_matches('{');
                    let item = item.split_whitespace().next().unwrap_or("");
                    if item.is_empty() || item == "self" {
                        continue;
                    }
                    let mut p = head.clone();
                    p.extend(
                        item.split("::")
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                    out.push(p);
                }
            }
            out.push(head);
        }
        i = end.max(start + 1);
    }
    out
}

/// The strongly connected sets of two or more modules (Tarjan), each sorted, in order.
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let edges = self.edges;
            for w in edges.get(v).into_iter().flatten() {
                let Some((w, _)) = edges.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut set = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    set.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if set.len() > 1 {
                    set.sort();
                    self.found.push(set);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found.sort();
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Module {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split("::").map(str::to_owned).collect()
        }
    }

    fn files(list: &[(&str, &str)]) -> BTreeMap<Module, String> {
        list.iter().map(|(k, v)| (m(k), code_of(v))).collect()
    }

    #[test]
    fn paths_are_found_with_groups_and_not_in_comments_or_tests() {
        let code = code_of(
            "use crate::a::{b, c::D as E, self};\n\
             use super::x::Y; // crate::not_this\n\
             fn f() { self::z::g(); my_crate::no(); }\n\
             #[cfg(test)]\nmod tests { use crate::tests_only; }",
        );
        let found: Vec<String> = paths(&code).iter().map(|p| p.join("::")).collect();
        assert_eq!(
            found,
            [
                "crate::a::b",
                "crate::a::c::D",
                "crate::a",
                "super::x::Y",
                "self::z::g"
            ]
        );
    }

    #[test]
    fn relative_paths_resolve_from_the_module() {
        let here = m("device::driver");
        let p = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            absolute(&here, &p("super::events::E")),
            Some(m("device::events::E"))
        );
        assert_eq!(absolute(&here, &p("super::super::error")), Some(m("error")));
        assert_eq!(absolute(&here, &p("crate::id::X")), Some(m("id::X")));
        assert_eq!(
            absolute(&here, &p("self::inner")),
            Some(m("device::driver::inner"))
        );
        assert_eq!(absolute(&m(""), &p("super::x")), None);
    }

    #[test]
    fn a_cycle_between_siblings_is_found_and_parents_are_not_one() {
        let f = files(&[
            ("", "mod a; mod b; mod c; use crate::a::A;"),
            ("a", "use crate::b::B; use super::c;"),
            ("b", "use crate::a::A;"),
            ("c", "use crate::A;"),
            ("c::d", "use super::super::c; use crate::c::X;"),
        ]);
        assert_eq!(cycles(&edges(&f)), vec![vec![m("a"), m("b")]]);
        // Without b's use of a: none.
        let f = files(&[("a", "use crate::b::B;"), ("b", "fn f() {}")]);
        assert!(cycles(&edges(&f)).is_empty());
    }

    #[test]
    fn a_cycle_of_three_is_one_set() {
        let f = files(&[
            ("x", "use crate::y::T;"),
            ("y", "use crate::z::T;"),
            ("z", "use crate::x::T;"),
            ("w", "use crate::x::T;"),
        ]);
        assert_eq!(cycles(&edges(&f)), vec![vec![m("x"), m("y"), m("z")]]);
    }
}
