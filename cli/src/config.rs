//! Layered configuration for `peerd serve`: defaults < TOML file < `PEERD_*` < flags.
//!
//! # Design
//!
//! Every setting is declared once, as a field of [`Settings`] that derives both
//! `clap::Args` and serde: its doc comment is the help text, `id` the TOML key
//! (`section.field`), `long` the flag, `env` the variable, `default_value_t` the default,
//! and its type the validation (`FromStr` for flags and variables, `Deserialize` for the
//! file, with one check behind both, e.g. [`AtLeast`]). `crate::settings` says how to add
//! one.
//!
//! Clap already layers flags over variables over defaults, and `ArgMatches::value_source`
//! says which of the three each value came from. This module slots the file in between:
//! a key whose clap value is only the default (or absent) takes the file's value when the
//! file has the key. Why this and not a second struct of `Option`s as a "layer": that
//! struct would restate every field (and drift), and clap would then have no defaults to
//! show in `--help`.
//!
//! Merging works on TOML tables, not on fields, so it needs no code per setting: the clap
//! values and the file's values are both serialized, keys are copied from the file's table
//! where the file wins, and the result is deserialized into [`Settings`] once more.
//!
//! The file is read twice: once as a spanned document ([`toml::de::DeTable`]), to refuse
//! unknown keys naming the whole key and its line (with the nearest known key as a
//! suggestion) and to tell which keys it sets; once into [`Settings`] (`deny_unknown_fields`
//! as well), whose errors carry a span that the document turns into the key and line.

use std::collections::BTreeSet;
use std::fmt::{self, Display, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::de::{DeTable, DeValue};

use crate::settings::Settings;

/// Why the configuration was refused. Every variant names the key at fault where there is
/// one, and the file and line where the value came from a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML (toml's message has the line and a snippet).
    #[error("config file {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// The file has a key no setting has (a typo, or a setting of another version).
    #[error(
        "config file {}, line {line}: unknown key `{key}`{}",
        path.display(),
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// The whole dotted key, section included.
        key: String,
        /// The known key nearest to it, if one is near.
        suggestion: Option<String>,
    },
    /// A value in the file is of the wrong type or out of range.
    #[error("config file {}, line {line}: {key}: {message}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The dotted key (`?` if the span named none, which should not happen).
        key: String,
        /// Why (toml's or the setting type's message).
        message: String,
    },
    /// Values that are fine alone do not work together (or `listen()` refused one).
    #[error("{key} ({origin}): {reason}")]
    Invalid {
        /// The key at fault.
        key: String,
        /// Where its value came from: `default`, `file PATH`, `env VAR`, `flag --flag`.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The settings could not be written as TOML (a number too large for TOML's i64).
    #[error("cannot write the configuration as TOML: {0}")]
    Write(#[from] toml::ser::Error),
    /// The merged table did not read back into the settings: a bug in the merge.
    #[error("internal: the merged configuration does not read back: {0}")]
    Merge(#[from] toml::de::Error),
}

/// Where a setting's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The `--config` file.
    File,
    /// Its `PEERD_*` variable.
    Env,
    /// Its flag on the command line.
    Flag,
}

/// One setting's names, read from its clap definition (the single source).
#[derive(Debug, Clone)]
pub struct Key {
    /// The dotted TOML key, `section.field` (the clap id).
    pub key: String,
    /// The flag, without `--`.
    pub flag: String,
    /// The environment variable.
    pub env: String,
    /// The help text (the field's doc comment).
    #[cfg_attr(not(test), allow(dead_code))] // read by the docs test
    pub help: String,
    /// The default depends on the machine (cores, memory); `--help` and the docs say how.
    #[cfg_attr(not(test), allow(dead_code))] // read by the docs test
    pub computed_default: bool,
}

/// Every setting, in declaration order (sections in order, fields in order).
pub fn keys() -> Vec<Key> {
    let cmd = Settings::augment_args(Command::new("peerd serve"));
    cmd.get_arguments()
        .map(|a| Key {
            key: a.get_id().as_str().to_string(),
            flag: a.get_long().unwrap_or_default().to_string(),
            env: a
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
            help: a.get_help().map(|h| h.to_string()).unwrap_or_default(),
            computed_default: a.is_hide_default_value_set(),
        })
        .collect()
}

/// A settings struct holding its clap defaults alone: no flags, no environment. Serde's
/// `#[serde(default)]` on the settings structs comes from here, so a file that leaves a
/// key out means the same default as a command line that does.
pub fn clap_defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(Command::new("defaults").no_binary_name(true))
        .mut_args(|a| a.env(None::<&'static str>));
    let m = cmd
        .try_get_matches_from(std::iter::empty::<&str>())
        .expect("every default parses (the unit tests check them)");
    T::from_arg_matches(&m).expect("defaults fill every field")
}

/// The settings `peerd serve` runs with, and where each came from.
pub struct Effective {
    /// The merged settings, checked.
    pub settings: Settings,
    /// Each key and its source, in declaration order.
    sources: Vec<(Key, Source)>,
    /// The `--config` file, if any.
    file: Option<PathBuf>,
}

/// Merge the file at `file` (if any) under what clap parsed (`cli`, with `matches` saying
/// where each value came from), then check the result.
pub fn resolve(
    cli: &Settings,
    matches: &ArgMatches,
    file: Option<&Path>,
) -> Result<Effective, ConfigError> {
    let keys = keys();
    let known: BTreeSet<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let loaded = file.map(|p| load(p, &known)).transpose()?;
    let mut merged = toml::Table::try_from(cli)?;
    let file_table = loaded
        .as_ref()
        .map(|(s, _)| toml::Table::try_from(s))
        .transpose()?;
    let mut sources = Vec::with_capacity(keys.len());
    for k in keys {
        let source = match matches.value_source(&k.key) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => match &loaded {
                Some((_, present)) if present.contains(&k.key) => Source::File,
                _ => Source::Default,
            },
        };
        if let (Source::File, Some(table)) = (source, &file_table) {
            set_path(&mut merged, &k.key, get_path(table, &k.key).cloned());
        }
        sources.push((k, source));
    }
    let eff = Effective {
        settings: merged.try_into()?,
        sources,
        file: file.map(Path::to_path_buf),
    };
    if let Err((key, reason)) = eff.settings.check() {
        return Err(eff.invalid(key, reason));
    }
    Ok(eff)
}

impl Effective {
    /// Where `key`'s value came from, in words: `default`, `file PATH`, `env VAR`,
    /// `flag --flag`.
    pub fn origin(&self, key: &str) -> String {
        match self.sources.iter().find(|(k, _)| k.key == key) {
            None => "default".into(),
            Some((k, s)) => self.describe(k, *s),
        }
    }

    fn describe(&self, k: &Key, s: Source) -> String {
        match (s, &self.file) {
            (Source::Default, _) => "default".into(),
            (Source::File, Some(p)) => format!("file {}", p.display()),
            (Source::File, None) => "file".into(),
            (Source::Env, _) => format!("env {}", k.env),
            (Source::Flag, _) => format!("flag --{}", k.flag),
        }
    }

    /// The error refusing `key`'s value for `reason`, saying where the value came from.
    pub fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            origin: self.origin(key),
            reason: reason.into(),
        }
    }

    /// The effective configuration as TOML that `--config` takes back, each value followed
    /// by where it came from; keys without a value (an unset certificate) as comments.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let table = toml::Table::try_from(&self.settings)?;
        let mut out = String::from(
            "# peerd serve: the effective configuration. After each value, where it came from:\n\
             # default, file, env VAR or flag --FLAG (flags > env > file > defaults).\n\
             # Valid as a --config file; every key is described in docs/CONFIG.md.\n",
        );
        if let Some(p) = &self.file {
            let _ = writeln!(out, "# file: {}", p.display());
        }
        let mut section = None;
        for (k, s) in &self.sources {
            let (sec, name) = k.key.rsplit_once('.').unwrap_or(("", &k.key));
            if section != Some(sec) {
                section = Some(sec);
                if !sec.is_empty() {
                    let _ = write!(out, "\n[{sec}]\n");
                }
            }
            let from = match s {
                Source::File => "file".to_string(),
                _ => self.describe(k, *s),
            };
            let _ = match get_path(&table, &k.key) {
                Some(v) => writeln!(out, "{name} = {v}  # {from}"),
                None => writeln!(out, "# {name}: not set  # {from}"),
            };
        }
        Ok(out)
    }
}

/// Read the file: the settings it gives (defaults for keys it leaves out) and the keys it
/// sets.
fn load(path: &Path, known: &BTreeSet<&str>) -> Result<(Settings, BTreeSet<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc = DeTable::parse(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut present = BTreeSet::new();
    walk(doc.get_ref(), "", known, &mut present).map_err(|(key, at)| ConfigError::UnknownKey {
        path: path.to_path_buf(),
        line: line_of(&text, at),
        suggestion: nearest(&key, known),
        key,
    })?;
    let settings: Settings = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        ConfigError::BadValue {
            path: path.to_path_buf(),
            line: line_of(&text, at),
            key: key_at(doc.get_ref(), "", at).unwrap_or_else(|| "?".into()),
            message: e.message().to_string(),
        }
    })?;
    Ok((settings, present))
}

/// Collect the known keys `table` sets into `present`; the first unknown one is an error
/// (its dotted key and where it starts). Wrong types are left to deserializing, which
/// reports them naming the key.
fn walk(
    table: &DeTable<'_>,
    prefix: &str,
    known: &BTreeSet<&str>,
    present: &mut BTreeSet<String>,
) -> Result<(), (String, usize)> {
    for (k, v) in table.iter() {
        let key = join(prefix, k.get_ref());
        if known.contains(key.as_str()) {
            present.insert(key);
            continue;
        }
        let section = format!("{key}.");
        let is_section = known.iter().any(|n| n.starts_with(&section));
        match v.get_ref() {
            DeValue::Table(t) if is_section => walk(t, &key, known, present)?,
            // A section given a value that is not a table: a known key of the wrong type,
            // which deserializing reports, naming it.
            _ if is_section => {}
            _ => return Err((key, k.span().start)),
        }
    }
    Ok(())
}

/// The dotted key whose key or value holds byte `at`.
fn key_at(table: &DeTable<'_>, prefix: &str, at: usize) -> Option<String> {
    for (k, v) in table.iter() {
        let key = join(prefix, k.get_ref());
        if let DeValue::Table(t) = v.get_ref() {
            if let Some(inner) = key_at(t, &key, at) {
                return Some(inner);
            }
        }
        if k.span().contains(&at) || v.span().contains(&at) {
            return Some(key);
        }
    }
    None
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

/// 1-based line of byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The known key (or section) `key` was probably meant to be: the same name in another
/// section (`shards` at the top for `runtime.shards`), else the nearest in edit distance if
/// that is close enough to be a typo.
fn nearest(key: &str, known: &BTreeSet<&str>) -> Option<String> {
    let leaf = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    if let Some(k) = known.iter().find(|k| leaf(k) == leaf(key)) {
        return Some(k.to_string());
    }
    let sections = known
        .iter()
        .filter_map(|k| k.rsplit_once('.').map(|(s, _)| s));
    known
        .iter()
        .copied()
        .chain(sections)
        .map(|k| (edit_distance(key, k), k))
        .filter(|&(d, k)| d <= 3.max(k.len() / 5))
        .min()
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance (a few short keys: the quadratic table is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

fn get_path<'t>(table: &'t toml::Table, key: &str) -> Option<&'t toml::Value> {
    let (sec, name) = match key.rsplit_once('.') {
        Some((sec, name)) => (Some(sec), name),
        None => (None, key),
    };
    let table = match sec {
        Some(sec) => get_path(table, sec)?.as_table()?,
        None => table,
    };
    table.get(name)
}

/// Set (or with `None` remove) the value at a dotted key, making tables on the way.
fn set_path(table: &mut toml::Table, key: &str, value: Option<toml::Value>) {
    let mut parts = key.split('.').peekable();
    let mut t = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            match value {
                Some(v) => t.insert(part.to_string(), v),
                None => t.remove(part),
            };
            return;
        }
        let next = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !next.is_table() {
            *next = toml::Value::Table(toml::Table::new());
        }
        t = next.as_table_mut().expect("made a table above");
    }
}

/// A number of at least `MIN`. As a setting's type it makes flags, variables and the file
/// refuse smaller values alike, with the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLeast<T, const MIN: u64>(pub T);

impl<T: Copy, const MIN: u64> AtLeast<T, MIN> {
    /// The number.
    pub fn get(self) -> T {
        self.0
    }
}

impl<T: Copy + TryInto<u64>, const MIN: u64> AtLeast<T, MIN> {
    fn check(v: T) -> Result<Self, String> {
        match v.try_into() {
            Ok(n) if n >= MIN => Ok(AtLeast(v)),
            _ => Err(format!("must be at least {MIN}")),
        }
    }
}

impl<T, const MIN: u64> FromStr for AtLeast<T, MIN>
where
    T: FromStr + Copy + TryInto<u64>,
    T::Err: Display,
{
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::check(s.parse().map_err(|e: T::Err| e.to_string())?)
    }
}

impl<T: Display, const MIN: u64> Display for AtLeast<T, MIN> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize, const MIN: u64> Serialize for AtLeast<T, MIN> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T, const MIN: u64> Deserialize<'de> for AtLeast<T, MIN>
where
    T: Deserialize<'de> + Copy + TryInto<u64>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::check(T::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A value that is written as a string in the file and parsed like its flag
/// (`FromStr`/`Display`), e.g. an endpoint `ws://127.0.0.1:7401/`: one parser for all
/// three sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T>(pub T);

impl<T: FromStr> FromStr for Parsed<T>
where
    T::Err: Display,
{
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Parsed).map_err(|e: T::Err| e.to_string())
    }
}

impl<T: Display> Display for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Display> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de, T: FromStr> Deserialize<'de> for Parsed<T>
where
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Parsed).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    //! The settings' declarations agree with each other and with the documents that list
    //! them. `PEERD_BLESS=1` rewrites docs/CONFIG.md's generated table.

    use super::*;

    const BEGIN: &str = "<!-- BEGIN generated from cli/src/settings.rs: \
                         PEERD_BLESS=1 cargo test -p peerd-cli --bin peerd -->";
    const END: &str = "<!-- END generated -->";

    fn repo_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    /// docs/CONFIG.md's table of every setting.
    fn reference_table() -> String {
        let mut t = String::from(
            "| key | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
        );
        // Defaults as the file writes them.
        let defaults = toml::Table::try_from(Settings::default()).unwrap();
        for k in keys() {
            let default = match get_path(&defaults, &k.key) {
                _ if k.computed_default => "computed, see meaning".to_string(),
                Some(v) => format!("`{v}`"),
                None => "not set".to_string(),
            };
            let help = k.help.replace('\n', " ").replace('|', "\\|");
            let _ = writeln!(
                t,
                "| `{}` | `--{}` | `{}` | {default} | {help} |",
                k.key, k.flag, k.env
            );
        }
        t
    }

    #[test]
    fn every_key_is_a_file_key_and_every_file_key_is_a_setting() {
        // The defaults, plus a value for each key without one (an unset Option): the first
        // of a few samples its type takes.
        let mut doc = toml::Table::try_from(Settings::default()).unwrap();
        let samples = || {
            [
                toml::Value::String("x".into()),
                toml::Value::String("127.0.0.1:1".into()),
                toml::Value::String("RS256".into()),
                toml::Value::String("{}".into()),
                toml::Value::Integer(1),
                toml::Value::Boolean(true),
            ]
        };
        for k in keys() {
            if get_path(&doc, &k.key).is_some() {
                continue;
            }
            let fits = samples().into_iter().find(|v| {
                let mut d = doc.clone();
                set_path(&mut d, &k.key, Some(v.clone()));
                d.try_into::<Settings>().is_ok()
            });
            let v = fits.unwrap_or_else(|| {
                panic!("{}: not a field's path, or no sample fits its type", k.key)
            });
            set_path(&mut doc, &k.key, Some(v));
        }
        // deny_unknown_fields: each id names a serde field at that path...
        let s: Settings = doc
            .clone()
            .try_into()
            .unwrap_or_else(|e| panic!("a key is not its field's path: {e}"));
        // ...and every serde field is a key (written back: nothing else, nothing lost).
        assert_eq!(toml::Table::try_from(&s).unwrap(), doc);
        let mut leaves = Vec::new();
        fn collect(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(t) => collect(t, &join(prefix, k), out),
                    _ => out.push(join(prefix, k)),
                }
            }
        }
        collect(&doc, "", &mut leaves);
        let mut ids: Vec<String> = keys().into_iter().map(|k| k.key).collect();
        ids.sort();
        leaves.sort();
        assert_eq!(ids, leaves);
    }

    #[test]
    fn every_setting_has_a_flag_and_its_peerd_variable() {
        for k in keys() {
            assert!(!k.flag.is_empty(), "{}: no flag", k.key);
            let env = format!("PEERD_{}", k.flag.to_uppercase().replace('-', "_"));
            assert_eq!(k.env, env, "{}: variable is not PEERD_ + the flag", k.key);
            assert!(!k.help.is_empty(), "{}: no doc comment", k.key);
        }
    }

    #[test]
    fn library_options_map_to_keys() {
        let ids: Vec<String> = keys().into_iter().map(|k| k.key).collect();
        for (option, key) in crate::settings::LIBRARY_OPTIONS {
            assert!(
                ids.iter().any(|k| k == key),
                "{option} -> {key}: no such key"
            );
        }
    }

    #[test]
    fn defaults_are_the_librarys_and_valid() {
        let s = Settings::default();
        assert_eq!(s.check(), Ok(()));
        let lib = peerd_server::ListenOptions::default();
        let opts = s.listen_options(false);
        assert_eq!(opts.endpoints, lib.endpoints);
        assert_eq!(opts.shards, lib.shards);
        assert_eq!(opts.limits, lib.limits);
        assert_eq!(opts.heartbeat, lib.heartbeat);
        assert_eq!(opts.handshake_timeout, lib.handshake_timeout);
        assert_eq!(opts.spin_before_park, lib.spin_before_park);
        assert_eq!(opts.pin, lib.pin);
    }

    #[test]
    fn docs_config_md_lists_every_setting() {
        let path = repo_file("docs/CONFIG.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (start, end) = match (text.find(BEGIN), text.find(END)) {
            (Some(s), Some(e)) => (s + BEGIN.len() + 1, e),
            _ => panic!(
                "{}: markers {BEGIN:?} and {END:?} not found",
                path.display()
            ),
        };
        let want = reference_table();
        if std::env::var_os("PEERD_BLESS").is_some() {
            let new = format!("{}{want}{}", &text[..start], &text[end..]);
            std::fs::write(&path, new).unwrap();
            return;
        }
        assert_eq!(
            &text[start..end],
            want,
            "docs/CONFIG.md's table is stale: PEERD_BLESS=1 cargo test -p peerd-cli --bin peerd"
        );
    }

    #[test]
    fn deploy_example_documents_every_key() {
        let text = std::fs::read_to_string(repo_file("deploy/peerd.toml")).unwrap();
        let mut section = String::new();
        let mut seen = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            // `key = value`, or commented out: `# key = value`.
            let body = line.strip_prefix('#').unwrap_or(line).trim();
            if let Some((name, _)) = body.split_once('=') {
                let name = name.trim();
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    seen.insert(join(&section, name));
                }
            }
        }
        // What it sets is the default: it is an example, not a tuning.
        let set: toml::Table = toml::from_str(&text).unwrap();
        let defaults = toml::Table::try_from(Settings::default()).unwrap();
        for k in keys() {
            assert!(
                seen.contains(&k.key),
                "deploy/peerd.toml does not show {}",
                k.key
            );
            if let Some(v) = get_path(&set, &k.key) {
                assert!(
                    !k.computed_default,
                    "{}: a machine's value as default",
                    k.key
                );
                assert_eq!(Some(v), get_path(&defaults, &k.key), "{}", k.key);
            }
        }
    }

    #[test]
    fn at_least_refuses_the_same_values_from_every_source() {
        type Frame = AtLeast<u32, 1024>;
        assert_eq!("1024".parse::<Frame>(), Ok(AtLeast(1024)));
        assert_eq!("1023".parse::<Frame>(), Err("must be at least 1024".into()));
        assert!("-1".parse::<Frame>().is_err());
        #[derive(Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            v: Frame,
        }
        let e = toml::from_str::<T>("v = 1023").unwrap_err();
        assert_eq!(e.message(), "must be at least 1024");
        assert!(toml::from_str::<T>("v = 1024").is_ok());
    }

    #[test]
    fn typos_get_a_suggestion() {
        let known: BTreeSet<&str> = ["limits.max_frame_len", "runtime.shards"].into();
        let guess = |k| nearest(k, &known);
        assert_eq!(
            guess("limits.max_frame_lenn").as_deref(),
            Some("limits.max_frame_len")
        );
        assert_eq!(guess("shards").as_deref(), Some("runtime.shards"));
        assert_eq!(guess("limitz").as_deref(), Some("limits"));
        assert_eq!(guess("completely.different"), None);
    }
}
