//! The command template of `shoal run` and its GNU parallel replacement strings
//! (`{}`, `{.}`, `{/}`, `{//}`, `{/.}`, `{#}`, `{%}`, `{n}` and `{n.}`-style forms).
//!
//! A template is parsed once into segments; [`Template::render`] then only
//! concatenates, because it runs once per attempt on the hot path. It decides too
//! whether the command runs directly (execvp of the first word) or through `sh -c`,
//! and in the shell case it quotes every substituted input so that no input can
//! inject shell syntax. It neither spawns nor reads inputs.

use std::fmt::Write as _;

use shoal_core::process::CommandLine;
use shoal_core::task::{SlotId, TaskId};

/// Why a command template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No command words at all.
    #[error("the command is empty")]
    EmptyCommand,
    /// `{0}`, `{0.}`…: input groups are numbered from 1.
    #[error("{placeholder}: input groups are numbered from 1")]
    GroupZero { placeholder: String },
    /// A `{n}` placeholder past the number of input groups.
    #[error("{placeholder} refers to input group {group}, but there {}", count_groups(*.groups))]
    GroupOutOfRange { placeholder: String, group: usize, groups: usize },
}

fn count_groups(n: usize) -> String {
    match n {
        1 => "is 1 input group".to_owned(),
        n => format!("are {n} input groups"),
    }
}

/// A human-readable form of a rendered command: the script for a shell command,
/// otherwise the words joined by spaces and shell-quoted where needed (so it can be
/// pasted into a shell).
pub fn display(command: &CommandLine) -> String {
    if command.program == "sh" && command.args.len() == 2 && command.args[0] == "-c" {
        return command.args[1].clone();
    }
    let mut out = String::new();
    for (i, word) in std::iter::once(&command.program).chain(&command.args).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        shell_quote(word, &mut out);
    }
    out
}

/// A parsed command template.
#[derive(Debug, Clone)]
pub struct Template {
    body: Body,
    /// No replacement string anywhere: inputs are appended as extra arguments.
    appends: bool,
    /// The `{n}` with the highest n, for [`Template::check_groups`].
    highest_group: Option<(usize, String)>,
    /// `-N`: the command's words (a shell command's split at white space), where a
    /// word holding `{}` is repeated once per input.
    context: Option<Vec<Vec<Segment>>>,
}

#[derive(Debug, Clone)]
enum Body {
    /// One segment list per word; executed directly.
    Direct(Vec<Vec<Segment>>),
    /// The words joined by single spaces into one `sh -c` script.
    Shell(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    /// `group` is 1-based; `None` means every group (`{}` and its variants).
    Input {
        group: Option<usize>,
        part: Part,
    },
    TaskNumber,
    SlotNumber,
}

/// Which part of an input value a replacement string takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Whole,
    NoExt,
    Base,
    Dir,
    BaseNoExt,
}

impl Part {
    fn from_suffix(s: &str) -> Option<Part> {
        Some(match s {
            "" => Part::Whole,
            "." => Part::NoExt,
            "/" => Part::Base,
            "//" => Part::Dir,
            "/." => Part::BaseNoExt,
            _ => return None,
        })
    }

    /// GNU parallel's definitions: `{.}` is `s:\.[^/.]*$::`, `{/}` is `s:^.*/::`,
    /// `{//}` is Perl's `dirname`.
    fn apply(self, value: &str) -> &str {
        match self {
            Part::Whole => value,
            Part::NoExt => strip_extension(value),
            Part::Base => basename(value),
            Part::Dir => dirname(value),
            Part::BaseNoExt => strip_extension(basename(value)),
        }
    }
}

fn strip_extension(value: &str) -> &str {
    match value.rfind('.') {
        Some(dot) if !value[dot..].contains('/') => &value[..dot],
        _ => value,
    }
}

fn basename(value: &str) -> &str {
    value.rfind('/').map_or(value, |slash| &value[slash + 1..])
}

fn dirname(value: &str) -> &str {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return if value.is_empty() { "." } else { "/" };
    }
    match trimmed.rfind('/') {
        None => ".",
        Some(slash) => match trimmed[..slash].trim_end_matches('/') {
            "" => "/",
            dir => dir,
        },
    }
}

/// Shell builtins and keywords that `execvp` cannot run: a command starting with one
/// of them needs a shell.
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "[[", "{", "alias", "bg", "break", "case", "cd", "continue", "declare", "do",
    "done", "elif", "else", "esac", "eval", "exec", "exit", "export", "fg", "fi", "for",
    "function", "getopts", "hash", "if", "jobs", "let", "local", "readonly", "read", "return",
    "select", "set", "shift", "source", "then", "trap", "typeset", "ulimit", "umask", "unalias",
    "unset", "until", "wait", "while",
];

/// Characters in the command's own text that only a shell understands.
fn is_shell_char(c: char) -> bool {
    c.is_whitespace() || "|&;<>()$`\\\"'*?[#~".contains(c)
}

impl Template {
    /// Parses the command words. The command runs through `sh -c` when `force_shell`
    /// is set or when its text needs a shell (metacharacters or whitespace, an
    /// environment assignment or a shell builtin as first word); otherwise directly.
    pub fn parse(command: &[String], force_shell: bool) -> Result<Template, TemplateError> {
        Template::parse_as(command, Some(force_shell))
    }

    /// Parses the command words to run as they are (GNU parallel's `--quote`): each
    /// word one argument, never through a shell, whatever characters it holds.
    pub fn parse_quoted(command: &[String]) -> Result<Template, TemplateError> {
        Template::parse_as(command, None)
    }

    /// `force_shell`: `None` never runs a shell.
    fn parse_as(command: &[String], force_shell: Option<bool>) -> Result<Template, TemplateError> {
        if command.is_empty() {
            return Err(TemplateError::EmptyCommand);
        }
        let mut highest_group: Option<(usize, String)> = None;
        let mut words = Vec::with_capacity(command.len());
        for word in command {
            words.push(parse_word(word, &mut highest_group)?);
        }
        let all = || words.iter().flatten();
        let appends = !all().any(|s| !matches!(s, Segment::Text(_)));
        let literal = |segs: &[Segment]| -> String {
            segs.iter()
                .filter_map(|s| if let Segment::Text(t) = s { Some(t.as_str()) } else { None })
                .collect()
        };
        let first = literal(&words[0]);
        let first_is_builtin = words[0].len() == 1 && SHELL_WORDS.contains(&first.as_str());
        let Some(force_shell) = force_shell else {
            return Ok(Template {
                body: Body::Direct(words),
                appends,
                highest_group,
                context: None,
            });
        };
        let needs_shell = force_shell
            || first_is_builtin
            || first.contains('=')
            || all().any(|s| matches!(s, Segment::Text(t) if t.contains(is_shell_char)));
        let body = if needs_shell {
            let mut script = Vec::new();
            for (i, word) in words.into_iter().enumerate() {
                if i > 0 {
                    push_text(&mut script, " ");
                }
                for seg in word {
                    match seg {
                        Segment::Text(t) => push_text(&mut script, &t),
                        other => script.push(other),
                    }
                }
            }
            Body::Shell(script)
        } else {
            Body::Direct(words)
        };
        Ok(Template { body, appends, highest_group, context: None })
    }

    /// Checks that every `{n}` names one of the `groups` input groups.
    pub fn check_groups(&self, groups: usize) -> Result<(), TemplateError> {
        match &self.highest_group {
            Some((group, placeholder)) if *group > groups => Err(TemplateError::GroupOutOfRange {
                placeholder: placeholder.clone(),
                group: *group,
                groups,
            }),
            _ => Ok(()),
        }
    }

    /// Lets `{n}` name more inputs than a task has: those render empty, as with
    /// `--colsep` in GNU parallel, where a line may have fewer columns.
    pub fn allow_missing_groups(&mut self) {
        self.highest_group = None;
    }

    /// Replaces in context, as GNU parallel's `-N` (and `-X`): a word holding `{}`
    /// (or `{.}`, `{/}`…) is repeated once per input, each time with that input.
    pub fn replace_in_context(&mut self) {
        self.context = Some(match &self.body {
            Body::Direct(words) => words.clone(),
            Body::Shell(script) => split_at_white_space(script),
        });
    }

    /// Whether `{%}` (the slot number) appears.
    pub fn uses_slot(&self) -> bool {
        match &self.body {
            Body::Direct(words) => words.iter().flatten().any(|s| *s == Segment::SlotNumber),
            Body::Shell(script) => script.contains(&Segment::SlotNumber),
        }
    }

    /// Whether the command runs through `sh -c`.
    #[cfg(test)]
    fn uses_shell(&self) -> bool {
        matches!(self.body, Body::Shell(_))
    }

    /// Renders the command for one task: `args` holds one input per group. A group
    /// missing from `args` renders as an empty string ([`Template::check_groups`]
    /// catches that up front). With several groups, `{}` stands for all inputs; in a
    /// direct command they become separate arguments, as the shell splits them in
    /// GNU parallel.
    pub fn render(&self, args: &[String], task: TaskId, slot: SlotId) -> CommandLine {
        if let Some(words) = &self.context {
            return self.render_in_context(words, args, task, slot);
        }
        let all: &[String] = if args.is_empty() { std::slice::from_ref(empty()) } else { args };
        let value = |group: usize| args.get(group - 1).unwrap_or(empty()).as_str();
        match &self.body {
            Body::Shell(segments) => {
                let mut script =
                    String::with_capacity(64 + args.iter().map(|a| a.len() + 3).sum::<usize>());
                for seg in segments {
                    match seg {
                        Segment::Text(t) => script.push_str(t),
                        // A missing input is nothing, not '' (GNU parallel's).
                        Segment::Input { group: Some(g), .. } if *g > args.len() => {}
                        Segment::Input { group: Some(g), part } => {
                            shell_quote(part.apply(value(*g)), &mut script)
                        }
                        Segment::Input { group: None, part } => {
                            for (i, a) in all.iter().enumerate() {
                                if i > 0 {
                                    script.push(' ');
                                }
                                shell_quote(part.apply(a), &mut script);
                            }
                        }
                        Segment::TaskNumber => {
                            write!(script, "{task}").expect("writing to a String")
                        }
                        Segment::SlotNumber => {
                            write!(script, "{slot}").expect("writing to a String")
                        }
                    }
                }
                if self.appends {
                    for a in args {
                        script.push(' ');
                        shell_quote(a, &mut script);
                    }
                }
                CommandLine {
                    program: "sh".to_owned(),
                    args: vec!["-c".to_owned(), script],
                    cwd: None,
                }
            }
            Body::Direct(words) => {
                let mut out =
                    Vec::with_capacity(words.len() + if self.appends { args.len() } else { 0 });
                for word in words {
                    if only_missing(word, args.len()) {
                        continue;
                    }
                    let mut cur = String::new();
                    for seg in word {
                        match seg {
                            Segment::Text(t) => cur.push_str(t),
                            Segment::Input { group: Some(g), part } => {
                                cur.push_str(part.apply(value(*g)))
                            }
                            Segment::Input { group: None, part } => {
                                for (i, a) in all.iter().enumerate() {
                                    if i > 0 {
                                        out.push(std::mem::take(&mut cur));
                                    }
                                    cur.push_str(part.apply(a));
                                }
                            }
                            Segment::TaskNumber => {
                                write!(cur, "{task}").expect("writing to a String")
                            }
                            Segment::SlotNumber => {
                                write!(cur, "{slot}").expect("writing to a String")
                            }
                        }
                    }
                    out.push(cur);
                }
                if self.appends {
                    out.extend(args.iter().cloned());
                }
                let mut out = out.into_iter();
                let program = out.next().unwrap_or_default();
                CommandLine { program, args: out.collect(), cwd: None }
            }
        }
    }
}

/// `--tag`/`--tagstring`: text with replacement strings, rendered as is (it is
/// printed, never run, so nothing is quoted).
#[derive(Debug, Clone)]
pub struct Tag(Vec<Segment>);

impl Tag {
    /// Parses a `--tagstring`; `{n}` past a task's inputs renders empty.
    pub fn parse(text: &str) -> Result<Tag, TemplateError> {
        Ok(Tag(parse_word(text, &mut None)?))
    }

    /// Whether it holds no replacement string.
    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|seg| matches!(seg, Segment::Text(_)))
    }

    /// The tag of a task: `{}` is its inputs joined by spaces, as in GNU parallel.
    pub fn render(&self, args: &[String], task: TaskId, slot: SlotId) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Input { group: Some(g), part } => {
                    out.push_str(args.get(g - 1).map_or("", |a| part.apply(a)))
                }
                Segment::Input { group: None, part } => {
                    let parts: Vec<&str> = args.iter().map(|a| part.apply(a)).collect();
                    out.push_str(&parts.join(" "));
                }
                Segment::TaskNumber => write!(out, "{task}").expect("writing to a String"),
                Segment::SlotNumber => write!(out, "{slot}").expect("writing to a String"),
            }
        }
        out
    }
}

impl Template {
    /// [`Template::render`] for [`Template::replace_in_context`].
    fn render_in_context(
        &self,
        words: &[Vec<Segment>],
        args: &[String],
        task: TaskId,
        slot: SlotId,
    ) -> CommandLine {
        let all: &[String] = if args.is_empty() { std::slice::from_ref(empty()) } else { args };
        let shell = matches!(self.body, Body::Shell(_));
        let value = |group: usize| args.get(group - 1).unwrap_or(empty()).as_str();
        // One rendering of a word, `input` standing for `{}`.
        let render = |word: &[Segment], input: &str| {
            let mut out = String::new();
            for seg in word {
                match seg {
                    Segment::Text(t) => out.push_str(t),
                    Segment::Input { group: Some(g), .. } if *g > args.len() => {}
                    Segment::Input { group, part } => {
                        let v = match group {
                            Some(g) => part.apply(value(*g)),
                            None => part.apply(input),
                        };
                        if shell {
                            shell_quote(v, &mut out)
                        } else {
                            out.push_str(v)
                        }
                    }
                    Segment::TaskNumber => write!(out, "{task}").expect("writing to a String"),
                    Segment::SlotNumber => write!(out, "{slot}").expect("writing to a String"),
                }
            }
            out
        };
        let mut rendered = Vec::with_capacity(words.len() + args.len());
        for word in words {
            if !shell && only_missing(word, args.len()) {
                continue;
            }
            if word.iter().any(|s| matches!(s, Segment::Input { group: None, .. })) {
                rendered.extend(all.iter().map(|input| render(word, input)));
            } else {
                rendered.push(render(word, ""));
            }
        }
        if self.appends {
            rendered.extend(args.iter().cloned());
        }
        if !shell {
            let mut out = rendered.into_iter();
            let program = out.next().unwrap_or_default();
            return CommandLine { program, args: out.collect(), cwd: None };
        }
        // The shell's words are joined by their own white space; the repeated ones
        // and the appended inputs by one space.
        let mut script = String::new();
        let mut rendered = rendered.into_iter();
        for word in words {
            let repeats = if word.iter().any(|s| matches!(s, Segment::Input { group: None, .. })) {
                all.len()
            } else {
                1
            };
            for i in 0..repeats {
                if i > 0 {
                    script.push(' ');
                }
                script.push_str(&rendered.next().unwrap_or_default());
            }
        }
        for appended in rendered {
            script.push(' ');
            shell_quote(&appended, &mut script);
        }
        CommandLine { program: "sh".to_owned(), args: vec!["-c".to_owned(), script], cwd: None }
    }
}

/// Whether a word is only inputs past the task's `inputs` (with `--colsep` or `-N`):
/// GNU parallel then passes no word at all, not an empty one.
fn only_missing(word: &[Segment], inputs: usize) -> bool {
    word.iter().all(|s| matches!(s, Segment::Input { group: Some(g), .. } if *g > inputs))
}

/// A shell script's segments split into words and the runs of white space between
/// them (kept as words of their own, so the script keeps its spacing).
fn split_at_white_space(script: &[Segment]) -> Vec<Vec<Segment>> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    for seg in script {
        let Segment::Text(text) = seg else {
            word.push(seg.clone());
            continue;
        };
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let space = rest.starts_with(char::is_whitespace);
            let end = rest.find(|c: char| c.is_whitespace() != space).unwrap_or(rest.len());
            if space {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                words.push(vec![Segment::Text(rest[..end].to_owned())]);
            } else {
                push_text(&mut word, &rest[..end]);
            }
            rest = &rest[end..];
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn empty() -> &'static String {
    static EMPTY: String = String::new();
    &EMPTY
}

fn push_text(segments: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    match segments.last_mut() {
        Some(Segment::Text(t)) => t.push_str(text),
        _ => segments.push(Segment::Text(text.to_owned())),
    }
}

/// Splits one command word into literal text and replacement strings. Braces that do
/// not form a replacement string (`{foo}`, `{ }`, awk's `{print $1}`) stay literal.
fn parse_word(
    word: &str,
    highest: &mut Option<(usize, String)>,
) -> Result<Vec<Segment>, TemplateError> {
    let mut segments = Vec::new();
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        // The body ends at the next `}`, unless another `{` opens first ("{{}}").
        let close = match after.find(['{', '}']) {
            Some(close) if after.as_bytes()[close] == b'}' => close,
            _ => {
                push_text(&mut segments, &rest[..open + 1]);
                rest = after;
                continue;
            }
        };
        let body = &after[..close];
        match placeholder(body, highest)? {
            Some(seg) => {
                push_text(&mut segments, &rest[..open]);
                segments.push(seg);
            }
            None => push_text(&mut segments, &rest[..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    push_text(&mut segments, rest);
    if segments.is_empty() {
        // An empty word stays an (empty) argument in a direct command.
        segments.push(Segment::Text(String::new()));
    }
    Ok(segments)
}

/// The segment for the text between braces, or `None` when it is not a replacement string.
fn placeholder(
    body: &str,
    highest: &mut Option<(usize, String)>,
) -> Result<Option<Segment>, TemplateError> {
    match body {
        "#" => return Ok(Some(Segment::TaskNumber)),
        "%" => return Ok(Some(Segment::SlotNumber)),
        _ => {}
    }
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(part) = Part::from_suffix(&body[digits..]) else {
        return Ok(None);
    };
    if digits == 0 {
        return Ok(Some(Segment::Input { group: None, part }));
    }
    // Saturate rather than fail: `{99999999999999999999}` is reported as out of range.
    let group = body[..digits].parse::<usize>().unwrap_or(usize::MAX);
    if group == 0 {
        return Err(TemplateError::GroupZero { placeholder: format!("{{{body}}}") });
    }
    if !matches!(highest, Some((h, _)) if *h >= group) {
        *highest = Some((group, format!("{{{body}}}")));
    }
    Ok(Some(Segment::Input { group: Some(group), part }))
}

/// Appends `value` quoted for `sh`: bare when it holds only safe characters,
/// otherwise in single quotes with each `'` written as `'\''`.
pub fn shell_quote(value: &str, out: &mut String) {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        out.push_str(value);
        return;
    }
    out.push('\'');
    for (i, piece) in value.split('\'').enumerate() {
        if i > 0 {
            out.push_str("'\\''");
        }
        out.push_str(piece);
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn render(cmd: &[&str], args: &[&str]) -> CommandLine {
        Template::parse(&words(cmd), false).unwrap().render(&words(args), 7, 3)
    }

    /// The argument list a direct command gets, program first.
    fn argv(cmd: &[&str], args: &[&str]) -> Vec<String> {
        let line = render(cmd, args);
        assert_ne!(line.program, "sh", "{cmd:?} should run directly");
        std::iter::once(line.program).chain(line.args).collect()
    }

    fn script(cmd: &[&str], args: &[&str]) -> String {
        let line = render(cmd, args);
        assert_eq!(
            (line.program.as_str(), line.args.len(), line.args[0].as_str()),
            ("sh", 2, "-c")
        );
        line.args[1].clone()
    }

    /// Each replacement string applied to `input`, in the order {} {.} {/} {//} {/.}.
    fn parts(input: &str) -> Vec<String> {
        argv(&["x", "{}", "{.}", "{/}", "{//}", "{/.}"], &[input])[1..].to_vec()
    }

    fn in_context(cmd: &[&str], args: &[&str]) -> CommandLine {
        let mut t = Template::parse(&words(cmd), false).unwrap();
        t.allow_missing_groups();
        t.replace_in_context();
        t.render(&words(args), 7, 2)
    }

    #[test]
    fn in_context_a_word_with_braces_repeats_per_input() {
        let c = in_context(&["echo", "p{}q{1}", "{#}", "x{.}"], &["a.1", "b.2"]);
        assert_eq!(c.args, ["pa.1qa.1", "pb.2qa.1", "7", "xa", "xb"]);
        let c = in_context(&["echo", "{3}", "{2}x"], &["a", "b"]);
        assert_eq!(c.args, ["bx"], "a word of only a missing input is dropped");
        let c = in_context(&["echo  [{}]  {%} >&2"], &["a", "b c"]);
        assert_eq!(display(&c), "echo  [a] ['b c']  2 >&2");
        let c = in_context(&["echo", "{2}{1}", "|", "cat"], &["a"]);
        assert_eq!(display(&c), "echo a | cat", "a missing input is nothing in a script");
        assert_eq!(in_context(&["echo"], &["a", "b"]).args, ["a", "b"]);
    }

    #[test]
    fn replacement_strings_follow_gnu_parallel() {
        assert_eq!(
            parts("dir/sub/a.tar.gz"),
            ["dir/sub/a.tar.gz", "dir/sub/a.tar", "a.tar.gz", "dir/sub", "a.tar"]
        );
        assert_eq!(parts("a.txt"), ["a.txt", "a", "a.txt", ".", "a"]);
        assert_eq!(parts("noext"), ["noext", "noext", "noext", ".", "noext"]);
        assert_eq!(parts("dir.d/file"), ["dir.d/file", "dir.d/file", "file", "dir.d", "file"]);
        assert_eq!(parts("dir/sub/"), ["dir/sub/", "dir/sub/", "", "dir", ""]);
        assert_eq!(parts("/a.c"), ["/a.c", "/a", "a.c", "/", "a"]);
        assert_eq!(parts(".bashrc"), [".bashrc", "", ".bashrc", ".", ""]);
        assert_eq!(parts("a//b.x"), ["a//b.x", "a//b", "b.x", "a", "b"]);
        assert_eq!(parts(""), ["", "", "", ".", ""]);
    }

    #[test]
    fn numbered_groups_and_combined_forms() {
        let cmd = ["cp", "{1}", "{2//}/{1/.}.{2/}", "{2.}", "{1/}", "{1//}", "{1.}"];
        assert_eq!(
            argv(&cmd, &["src/a.c", "out/b.o"]),
            ["cp", "src/a.c", "out/a.b.o", "out/b", "a.c", "src", "src/a"]
        );
    }

    #[test]
    fn task_and_slot_numbers() {
        assert_eq!(argv(&["run", "--id={#}", "--slot={%}"], &["a"]), ["run", "--id=7", "--slot=3"]);
        assert!(Template::parse(&words(&["x", "{%}"]), false).unwrap().uses_slot());
        assert!(!Template::parse(&words(&["x", "{#}"]), false).unwrap().uses_slot());
        assert_eq!(script(&["echo {#} {%} | cat"], &["a"]), "echo 7 3 | cat");
    }

    #[test]
    fn inputs_are_appended_without_replacement_strings() {
        let t = Template::parse(&words(&["gzip", "-9"]), false).unwrap();
        assert!(t.appends);
        assert_eq!(argv(&["gzip", "-9"], &["a b.txt"]), ["gzip", "-9", "a b.txt"]);
        assert_eq!(argv(&["echo"], &["a", "b"]), ["echo", "a", "b"]);
        assert_eq!(script(&["echo hi |", "cat"], &["it's", "x"]), "echo hi | cat 'it'\\''s' x");
        // {#} alone is a replacement string too: nothing is appended.
        assert_eq!(argv(&["echo", "{#}"], &["a"]), ["echo", "7"]);
    }

    #[test]
    fn several_groups_in_braces() {
        // `{}` stands for all inputs; directly, they become separate arguments.
        assert_eq!(argv(&["echo", "{}"], &["a", "b c"]), ["echo", "a", "b c"]);
        assert_eq!(argv(&["echo", "x{}y"], &["a", "b"]), ["echo", "xa", "by"]);
        assert_eq!(argv(&["echo", "{2}-{1}"], &["a", "b"]), ["echo", "b-a"]);
        assert_eq!(script(&["echo", "{.}", ">", "out"], &["a.x", "b c.y"]), "echo a 'b c' > out");
        // A missing group renders empty rather than panicking.
        assert_eq!(argv(&["echo", "x{3}y"], &["a"]), ["echo", "xy"]);
        assert_eq!(argv(&["echo", "{}"], &[]), ["echo", ""]);
    }

    #[test]
    fn group_numbers_are_checked() {
        let t = Template::parse(&words(&["diff", "{1}", "{3.}", "{2}"]), false).unwrap();
        assert_eq!(t.check_groups(3), Ok(()));
        let err = t.check_groups(2).unwrap_err();
        assert_eq!(err.to_string(), "{3.} refers to input group 3, but there are 2 input groups");
        assert_eq!(
            t.check_groups(1).unwrap_err().to_string(),
            "{3.} refers to input group 3, but there is 1 input group"
        );
        let err = Template::parse(&words(&["echo", "{0}"]), false).unwrap_err();
        assert_eq!(err.to_string(), "{0}: input groups are numbered from 1");
        assert_eq!(Template::parse(&[], false).unwrap_err(), TemplateError::EmptyCommand);
    }

    #[test]
    fn other_braces_are_literal() {
        assert_eq!(
            argv(&["echo", "{foo}", "{{}}", "{", "a}{"], &["v"]),
            ["echo", "{foo}", "{v}", "{", "a}{"]
        );
        assert_eq!(script(&["echo", "{ }x"], &["v"]), "echo { }x v");
        assert_eq!(
            argv(&["echo", "{1x}", "{./}", "{-1}"], &["v"]),
            ["echo", "{1x}", "{./}", "{-1}", "v"]
        );
        assert_eq!(script(&["awk", "{print $1}", "{}"], &["f.txt"]), "awk {print $1} f.txt");
    }

    #[test]
    fn shell_detection() {
        let shell = |cmd: &[&str]| Template::parse(&words(cmd), false).unwrap().uses_shell();
        assert!(!shell(&["echo", "{}"]));
        assert!(!shell(&["echo", "{#}", "--x=1", "a,b", "@%+:./-"]));
        assert!(shell(&["echo {} | wc -c"]));
        assert!(shell(&["FOO=1", "env"]));
        assert!(shell(&["cd", "/tmp"]));
        assert!(shell(&["{", "echo", "a;", "}"]));
        assert!(shell(&["!", "false"]));
        assert!(shell(&["echo", "$HOME"]));
        assert!(shell(&["ls", "*.txt"]));
        assert!(shell(&["echo", "~"]));
        assert!(shell(&["echo", "a#b"]));
        assert!(shell(&["echo", "a\nb"]));
        assert!(!shell(&["{}", "--version"]));
        assert!(!shell(&["echo", "cd"]), "a builtin's name only counts as the first word");
        assert!(!shell(&["env", "FOO=1"]), "`=` only counts in the first word");
        assert!(Template::parse(&words(&["echo", "{}"]), true).unwrap().uses_shell());
        // --quote: never, whatever the words hold.
        let quoted = Template::parse_quoted(&words(&["echo", "a;b", "$x", "{}"])).unwrap();
        assert!(!quoted.uses_shell());
        assert_eq!(
            quoted.render(&words(&["c d"]), 1, 1),
            CommandLine { program: "echo".into(), args: words(&["a;b", "$x", "c d"]), cwd: None }
        );
        assert_eq!(
            render(&["echo", "{}"], &["a"]),
            CommandLine { program: "echo".into(), args: words(&["a"]), cwd: None }
        );
    }

    #[test]
    fn inputs_cannot_inject_shell_syntax() {
        let evil = "$(touch /tmp/x); rm -rf /";
        assert_eq!(
            script(&["echo {} | wc -c"], &[evil]),
            "echo '$(touch /tmp/x); rm -rf /' | wc -c"
        );
        assert_eq!(
            script(&["echo {} | wc -c"], &["'; rm -rf / #"]),
            "echo ''\\''; rm -rf / #' | wc -c"
        );
        assert_eq!(
            script(&["echo {/} {.} >", "{1}.out"], &["a b/c d.e"]),
            "echo 'c d.e' 'a b/c d' > 'a b/c d.e'.out"
        );
        assert_eq!(script(&["echo", "[{}]", "|", "cat"], &[""]), "echo [''] | cat");
        // Direct commands get the text as it is: there is no shell to inject into.
        assert_eq!(argv(&["echo", "{}"], &[evil]), ["echo", evil]);
    }

    #[test]
    fn quoted_inputs_reach_a_real_shell_unchanged() {
        let t = Template::parse(&words(&["printf '%s|' {} {1/}"]), false).unwrap();
        for input in
            ["$(touch /tmp/x); rm -rf /", "it's", "a\nb", "`id`", "~", "*", "", "-n", "a'b'\"c\\"]
        {
            let line = t.render(&words(&[input]), 1, 1);
            let out = std::process::Command::new(&line.program).args(&line.args).output().unwrap();
            let base = input.rsplit('/').next().unwrap();
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                format!("{input}|{base}|"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn display_forms() {
        assert_eq!(display(&render(&["echo {} | wc -c"], &["a b"])), "echo 'a b' | wc -c");
        assert_eq!(
            display(&render(&["grep", "-c", "{}"], &["it's here"])),
            "grep -c 'it'\\''s here'"
        );
        assert_eq!(display(&render(&["touch", "{}"], &[""])), "touch ''");
    }
}
