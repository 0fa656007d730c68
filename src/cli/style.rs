//! Colour for the labels people scan for (`error:`, `warning:`, `hint:`, `->` steps), on a
//! terminal only: never with `NO_COLOR` set (no-color.org), never when stderr is a file, a
//! pipe or a log collector, so no escape code ends up in a log.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Whether stderr gets colour: a terminal and no `NO_COLOR` (any non-empty value).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        !no_color && std::io::stderr().is_terminal()
    })
}

const RED_BOLD: &str = "\x1b[1;31m";
const YELLOW_BOLD: &str = "\x1b[1;33m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// `text` with its leading label coloured (`error:`, `warning:`, `hint:` at any indentation,
/// `->`), line by line; unchanged when colour is off.
pub fn paint(text: &str) -> String {
    if enabled() {
        paint_with(text)
    } else {
        text.to_string()
    }
}

fn paint_with(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            for (label, colour) in [
                ("error:", RED_BOLD),
                ("warning:", YELLOW_BOLD),
                ("hint:", CYAN),
                ("->", BOLD),
            ] {
                if let Some(rest) = body.strip_prefix(label) {
                    return format!("{indent}{colour}{label}{RESET}{rest}");
                }
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_coloured_and_the_words_kept() {
        let text = "error: cannot connect\n  caused by: refused\n  hint: check the port";
        let painted = paint_with(text);
        assert!(painted.starts_with("\x1b[1;31merror:\x1b[0m cannot connect"));
        assert!(painted.contains("\n  caused by: refused\n"));
        assert!(painted.ends_with("  \x1b[36mhint:\x1b[0m check the port"));
        assert_eq!(
            paint_with("warning: slow"),
            "\x1b[1;33mwarning:\x1b[0m slow"
        );
        // Without the escapes it is the same text.
        let plain = painted
            .replace(RED_BOLD, "")
            .replace(CYAN, "")
            .replace(RESET, "");
        assert_eq!(plain, text);
    }
}
