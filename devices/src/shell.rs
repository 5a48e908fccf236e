//! POSIX shell quoting, so no argument (a serial, a path, a prompt) is ever interpreted by the
//! device's shell.

/// Quotes one argument for `sh`: safe words pass unchanged, everything else is wrapped in
/// single quotes with embedded single quotes written as `'\''`.
pub fn quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Quotes every argument and joins them with spaces into one command line.
pub fn join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `sh -c "printf '%s\n' <quoted args>"` and returns what it printed.
    fn echo_through_sh(args: &[&str]) -> String {
        let line = format!("printf '%s\\n' {}", join(args));
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{line}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_arguments_come_back_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("pwned");
        let touch = format!("touch {}", canary.display());
        let hostile = [
            format!("a;{touch}"),
            format!("$({touch})"),
            format!("`{touch}`"),
            format!("it's \"quoted\" | {touch} && {touch}"),
            "with space\tand\nnewline".to_owned(),
            String::new(),
            "*".to_owned(),
            "'".to_owned(),
        ];
        let args: Vec<&str> = hostile.iter().map(String::as_str).collect();
        let printed = echo_through_sh(&args);
        let expected: String = hostile.iter().map(|a| format!("{a}\n")).collect();
        assert_eq!(printed, expected);
        assert!(!canary.exists(), "an argument was executed by the shell");
    }

    #[test]
    fn plain_words_are_left_alone() {
        assert_eq!(quote("/data/local/tmp/x.gguf"), "/data/local/tmp/x.gguf");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(join(&["ls", "-l", "it's"]), r"ls -l 'it'\''s'");
    }
}
