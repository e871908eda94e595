//! The results table: the median over rounds of every figure for every
//! target, with the ratios the benchmark is read by.

use std::collections::BTreeMap;
use std::fmt::Write;

const TARGETS: [&str; 5] = ["wharf", "haproxy", "nginx", "direct", "relay"];
const RATIOS: [(&str, &str); 7] = [
    ("wharf", "haproxy"),
    ("wharf", "nginx"),
    ("wharf", "direct"),
    ("haproxy", "direct"),
    ("nginx", "direct"),
    ("wharf", "relay"),
    ("haproxy", "relay"),
];

/// Renders a Markdown table from lines of `figure<TAB>target<TAB>value`, one
/// per round; figures keep the order in which they first appear.
pub fn render(results: &str) -> anyhow::Result<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut values: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (n, line) in results
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let [figure, target, value] = fields[..] else {
            anyhow::bail!("line {}: expected figure, target and value", n + 1);
        };
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        if !order.contains(&figure) {
            order.push(figure);
        }
        values.entry((figure, target)).or_default().push(value);
    }
    let mut out = String::from(
        "| figure | wharf | HAProxy | nginx | direct | bare relay | wharf/HAProxy | wharf/nginx | wharf/direct | HAProxy/direct | nginx/direct | wharf/relay | HAProxy/relay |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for figure in order {
        let median = |target: &str| values.get(&(figure, target)).map(|v| median(v));
        write!(out, "| {figure} |")?;
        for target in TARGETS {
            write!(out, " {} |", median(target).map_or("–".into(), number))?;
        }
        for (a, b) in RATIOS {
            let ratio = match (median(a), median(b)) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            write!(out, " {ratio} |")?;
        }
        out.push('\n');
    }
    Ok(out)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn number(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        let table = render(
            "req/s\twharf\t90\nreq/s\twharf\t110\nreq/s\twharf\t100\n\
             req/s\thaproxy\t50\nreq/s\tdirect\t200\nreq/s\trelay\t400\n",
        )
        .unwrap();
        let row = table.lines().nth(2).unwrap();
        assert_eq!(
            row,
            "| req/s | 100 | 50.0 | – | 200 | 400 | 2.00 | – | 0.50 | 0.25 | – | 0.25 | 0.12 |"
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(render("req/s\twharf\n").is_err());
        assert!(render("req/s\twharf\tfast\n").is_err());
    }
}
