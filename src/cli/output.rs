//! Output as kubectl prints it: aligned tables (optionally without headers),
//! JSON and YAML.

use std::io::Write;

use serde::Serialize;

/// Output formats of the listing commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
    Name,
}

/// Renders rows as an aligned table: columns separated by at least three spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>], no_headers: bool) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(3);
    if !no_headers {
        let _ = writeln!(tw, "{}", headers.join("\t"));
    }
    for row in rows {
        let _ = writeln!(tw, "{}", row.join("\t"));
    }
    let _ = tw.flush();
    String::from_utf8(tw.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// JSON or YAML of any value.
pub fn structured<T: Serialize>(value: &T, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_default(),
        _ => format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()),
    }
}

/// A duration until `t` in kubectl's short style (`14m`, `2h5m`, `expired`).
pub fn until(t: jiff::Timestamp) -> String {
    let secs = t.duration_since(jiff::Timestamp::now()).as_secs();
    if secs <= 0 {
        return "expired".into();
    }
    crate::durations::format(std::time::Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_like_kubectl() {
        let t = super::table(
            &["NAME", "STATE"],
            &[vec!["a".into(), "Granted".into()], vec!["longer".into(), "Pending".into()]],
            false,
        );
        assert_eq!(t, "NAME     STATE\na        Granted\nlonger   Pending\n");
    }
}
