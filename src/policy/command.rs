//! Command analysis for `run_terminal_cmd`: turns the command string an agent
//! sends into the argv lists that command rules match, so that quoting, paths,
//! wrappers and shell tricks cannot slip a program past a rule.
//!
//! The executor never hands the string to a shell. Everything here follows from
//! that: the analysis describes exactly what will run, and refuses whatever it
//! cannot describe. Refusing is always safe; guessing is not.
//!
//! # Public API
//!
//! - [`analyze`]`(command, &`[`ShellOptions`]`)` returns a [`CommandLine`] or a
//!   [`CommandRefusal`].
//!   - [`CommandLine::argv`] and [`CommandLine::env`]: what the executor runs
//!     (argv as written) and the leading `NAME=value` words it puts in the
//!     child's environment.
//!   - [`CommandLine::invocations`]: every program that would run. The outer
//!     command comes first, then every command found inside a wrapper (`env`,
//!     `nice`, `timeout`, `xargs`, `sudo`, `sh -c SCRIPT`, `busybox APPLET`,
//!     `find -exec`, ... see `wrapper_spec`), recursively. Each [`Invocation`]
//!     has its program as a basename in `argv[0]` (`/usr/bin/sudo` -> `sudo`)
//!     and lists the wrappers it was found in (`via`). `sudo`/`doas`/`su` stay
//!     invocations of their own, so a rule can deny them, and are unwrapped too.
//!   - [`CommandLine::findings`]: arguments and environment that turn a
//!     harmless program into one that can run or delete anything
//!     ([`FindingKind`]). The policy turns them into rules.
//! - [`CommandPattern`]: a command rule's compiled matcher (a prefix such as
//!   `["git", "push"]`, plus optional `args_any` tokens), see its docs.
//! - [`CommandRefusal`]: `rule_id()` (`SHELL-001`, `SHELL-002`, `CMD-001`,
//!   `CMD-002`), a `Display` message saying what was found and where, and
//!   `advice()`.
//!
//! # Splitting
//!
//! Words are split the way a POSIX shell splits them: blanks separate words,
//! single quotes keep everything literal, double quotes keep everything but
//! `$`, backticks and backslash escapes, and a backslash outside quotes makes
//! the next character literal. So `"sudo" id`, `s\udo id` and `'s'udo id` all
//! name `sudo`. Leading and trailing blanks and newlines are ignored. NUL,
//! other control characters (such as `\r`) and bidirectional-text controls are
//! refused (SHELL-002), quoted or not: they only make a command look different
//! from what it is.
//!
//! # Shell syntax (SHELL-001)
//!
//! With `allow_shell_syntax: false` (the default) these are refused, because the
//! agent clearly expected a shell that will not be there: `;` `&` `&&` `|` `||`
//! `|&`, redirections (`<` `>` `>>` `2>&1` here-documents), `( )` subshells,
//! unquoted newlines, comments, `$VAR` `${...}` `$(...)` `$((...))` `$'...'`
//! and backticks (also inside double quotes, where a shell expands them), `<( )`
//! and `>( )`, brace expansion (`{a,b}`, `{1..3}`), history expansion outside
//! quotes (`!!`, `!foo`; a lone `!` as in `find . ! -name x` is fine),
//! `NAME+=value`, and shell keywords (`if`, `for`, `{`, `!`, `[[`, ...; quoted or
//! not) in command position. Inside single quotes all of these are literal and
//! fine (`grep 'a|b' file`); `echo "a;b"` is fine too. Globs (`*` `?` `[`) and
//! `~` are passed literally as arguments: there is no shell to expand them, and
//! a program given `*.rs` will say it found no such file. A lone `$` or one
//! followed by `/`, `.`, `,`, `:`, `%` or a closing bracket is literal in a
//! shell as well, so `sed "s/a$/b/"` is accepted.
//!
//! With `allow_shell_syntax: true` the command is still run without a shell:
//! shell characters are then passed literally to the program (quotes and
//! backslashes still group words) and so cannot do anything, and the analysis
//! says so.
//!
//! # Scripts a real shell runs
//!
//! `sh|bash|dash|zsh|ksh|... -c SCRIPT` (also versioned names such as
//! `zsh-5.9`, and `bash -lc`, `su -c`, `watch`, `flock FILE -c`, `script -c`,
//! `sg`, `eval`) hands text to a real shell, so it is analysed with the same
//! rules, recursively: `bash -lc "sudo id"` yields `sudo id` and `id`. In a script the shell also
//! expands unquoted globs into file names (which may be options such as
//! `-delete`), so those are refused as well, and a quoted `$(...)`, `${...}` or
//! backtick is refused (CMD-002) because bash evaluates such text inside
//! arithmetic, `PS4`, `eval`, `test -v` and similar. Builtins that keep text to
//! run later or change what a name runs (`trap`, `alias`, `fc`, `enable`,
//! `hash`, `bind`, `complete`, `compgen`, `emulate`, `zmodload`, `sched`,
//! `autoload`, `zle`, `let`) are refused (CMD-002) wherever they appear, also
//! behind `command` or `builtin`. `export`/`declare`/... assignments are
//! checked like environment assignments.
//! With `allow_shell_syntax: true` a script may hold plain commands joined by
//! `;` `&&` `||` `|` `|&` `&` and newlines, with comments and simple
//! redirections (writing a file is a [`FindingKind::WriteFlag`]); each command is
//! analysed. Anything else (expansions, substitutions, here-documents,
//! subshells, groups, keywords, globs) is refused with CMD-002: its effect
//! depends on values only known when it runs.
//!
//! # Programs (CMD-001) and wrappers (CMD-002)
//!
//! The program word must name a program literally: no glob or expansion
//! characters (`/usr/bin/su*`, `s?do`, `$X`, `{a,b}`), not empty, not a
//! directory, not starting with `-` or `=` (zsh expands `=cmd`). A wrapper whose
//! inner command cannot be determined is refused: an option it does not know
//! (parsed as its getopt would, so an unknown option could hide which word is
//! the program), `env -S`, `busybox` without an applet, `sh -c` without a
//! script, a program or script that is the `xargs -I`/`find -exec`/`fd -x`
//! placeholder or contains it (`find . -exec sh -c 'cat {}' \;`).
//!
//! `xargs` appends input to its command. When that input would decide what a
//! wrapper runs (`xargs -0 sudo`, `xargs env`, `xargs bash`), the wrapper stays
//! an invocation and gets an [`FindingKind::ExecFlag`] finding ("runs a command
//! read from input"), rather than a refusal: `xargs` itself is exec-capable, so
//! the policy already has to decide about it, and a rule on `sudo` still sees
//! `sudo`. Every command fed by `xargs`/`find -exec` gets
//! [`FindingKind::InputArguments`].
//!
//! # Known limits
//!
//! - Names, not identities: a program is judged by its basename. A file the
//!   agent wrote and named `ls` is `ls` (it gets a [`FindingKind::PathProgram`]
//!   finding when run by a relative or unusual path, but not via `PATH`).
//! - The findings table aims at the usual ways to escape (see `inspect`), not
//!   at every option of every program. `sed` and `awk` programs are parsed
//!   best effort (an unparsable `sed` script is reported as exec-capable).
//!   Configuration files are not read: a repository's own `.git/config`,
//!   `Makefile`, `package.json` or `~/.ssh/config` can make programs run code.
//! - Launchers not in the wrapper table (`parallel`, `docker`, `tmux`, ...) are
//!   reported as [`FindingKind::ExecFlag`] but not unwrapped.
//! - `fish`, `csh`, `pwsh`, `python -c` and other interpreters' code is not
//!   analysed; it is reported as [`FindingKind::Interpreter`].
//! - `sudo -s`/`-i` with a command run it through the target user's shell after
//!   escaping; the command is analysed as an argv. `su` and `script -c` run the
//!   user's `$SHELL`, shown as `sh` unless `-s` names it.
//! - Scripts are lexed with POSIX rules for every shell in the family; zsh's
//!   own extras are covered where they need `$`, globs, `=` or parentheses.
//!   Redirection targets in lenient scripts are reported, not checked against
//!   path rules.
//! - GNU getopt abbreviations (`--to-com`) are matched in the findings table and
//!   in `args_any`; an abbreviated option of a wrapper is refused as unknown.

use std::fmt;

/// How deep wrappers and scripts may nest before the analysis gives up.
const MAX_DEPTH: usize = 16;
/// Evidence longer than this is cut, so one finding cannot flood the audit.
const MAX_EVIDENCE: usize = 200;

/// Options from the policy (default: all false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShellOptions {
    /// Accept shell syntax: literal at the top level (no shell runs it), and
    /// plain command lists in `sh -c` scripts. See the module docs.
    pub allow_shell_syntax: bool,
}

/// The analysed command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandLine {
    /// The argv to execute (after stripping leading `VAR=value` assignments).
    pub argv: Vec<String>,
    /// Leading `VAR=value` assignments, to be put in the child's environment.
    pub env: Vec<(String, String)>,
    /// Every command that would run: the outer one first, then each command
    /// found inside a wrapper, recursively.
    pub invocations: Vec<Invocation>,
    /// Capabilities found in arguments or environment that turn a harmless
    /// program into one that can run or delete anything.
    pub findings: Vec<Finding>,
}

impl CommandLine {
    /// The findings about one invocation (by index into `invocations`).
    pub fn findings_for(&self, invocation: usize) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(move |f| f.invocation == invocation)
    }
}

/// One program that would run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Invocation {
    /// Normalized argv: `argv[0]` is the program's basename
    /// (`/usr/sbin/iptables` -> `iptables`), the rest verbatim.
    pub argv: Vec<String>,
    /// The original `argv[0]` as written (e.g. an absolute path).
    pub program_as_written: String,
    /// Wrappers this invocation was found inside, outermost first (empty for
    /// the outer command).
    pub via: Vec<String>,
}

impl Invocation {
    /// The program's basename.
    pub fn program(&self) -> &str {
        &self.argv[0]
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An argument makes the program run another command (`find -exec`,
    /// `git -c core.pager=..`, `rg --pre`, awk `system(`, `xargs`).
    ExecFlag,
    /// An argument makes the program delete files (`find -delete`,
    /// `rsync --delete`, `tar --remove-files`, `zip -m`).
    DeleteFlag,
    /// The program writes a file named in its arguments (`find -fprint`, awk
    /// `print > f`, sed `w f`, a script's `> file`).
    WriteFlag,
    /// The program runs code given to it (`python`, `node`, `sh script.sh`):
    /// it can do anything, only the sandbox contains it.
    Interpreter,
    /// An interactive program that can start a shell (`less`, `vim`, `psql`).
    ShellEscape,
    /// A build or package tool that runs code from the project or its
    /// dependencies (`make`, `cargo test`, `npm install`, `npx`).
    RunsProjectCode,
    /// An environment assignment that changes which code a program loads or
    /// runs (`LD_PRELOAD`, `PATH`, `GIT_SSH_COMMAND`, `BASH_ENV`).
    ExecEnv,
    /// Some arguments are only known at run time (`xargs`, `find -exec {}`).
    InputArguments,
    /// The program is named by a relative path or a path outside the system
    /// directories: its name says nothing about what it is.
    PathProgram,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ExecFlag => "exec_flag",
            FindingKind::DeleteFlag => "delete_flag",
            FindingKind::WriteFlag => "write_flag",
            FindingKind::Interpreter => "interpreter",
            FindingKind::ShellEscape => "shell_escape",
            FindingKind::RunsProjectCode => "runs_project_code",
            FindingKind::ExecEnv => "exec_env",
            FindingKind::InputArguments => "input_arguments",
            FindingKind::PathProgram => "path_program",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capability found in a command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The program's basename.
    pub program: String,
    /// Index of the invocation in [`CommandLine::invocations`].
    pub invocation: usize,
    pub what: FindingKind,
    /// The argument(s) or assignment that gave it away.
    pub evidence: String,
}

/// Why a command string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandRefusal {
    /// SHELL-001: shell syntax where no shell (or a stricter policy) runs it.
    ShellSyntax {
        /// What was found, e.g. "`&&` (a command list)".
        found: String,
        /// Where: "the command", "the script given to `bash -c` (inside sudo)".
        place: String,
        /// 1-based column in that text.
        column: usize,
        /// The text around it.
        excerpt: String,
    },
    /// SHELL-002: the string cannot be split into words, or is empty.
    Unsplittable { problem: String, place: String },
    /// CMD-001: the program word does not name a program literally.
    Program {
        program: String,
        problem: String,
        place: String,
    },
    /// CMD-002: a wrapper or script whose inner command cannot be determined.
    Undetermined {
        wrapper: String,
        problem: String,
        place: String,
    },
}

impl CommandRefusal {
    pub fn rule_id(&self) -> &'static str {
        match self {
            CommandRefusal::ShellSyntax { .. } => "SHELL-001",
            CommandRefusal::Unsplittable { .. } => "SHELL-002",
            CommandRefusal::Program { .. } => "CMD-001",
            CommandRefusal::Undetermined { .. } => "CMD-002",
        }
    }

    /// What the caller can do instead.
    pub fn advice(&self) -> &'static str {
        match self {
            CommandRefusal::ShellSyntax { .. } => {
                "send one command at a time, without shell syntax (no pipes, redirections, `;`, `&&`, `$VAR` or `$(...)`); put characters meant literally in single quotes"
            }
            CommandRefusal::Unsplittable { .. } => {
                "send a non-empty command and close every quote; put a literal quote inside the other kind of quotes"
            }
            CommandRefusal::Program { .. } => {
                "name the program literally, e.g. `ls` or `/usr/bin/ls`, without wildcards, variables or braces"
            }
            CommandRefusal::Undetermined { .. } => {
                "run the inner command directly, or give the wrapper only options and arguments that say plainly which command it runs"
            }
        }
    }
}

impl fmt::Display for CommandRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandRefusal::ShellSyntax {
                found,
                place,
                column,
                excerpt,
            } => write!(
                f,
                "shell syntax in {place}: {found} at column {column}, in `{excerpt}`"
            ),
            CommandRefusal::Unsplittable { problem, place } => {
                write!(f, "{place} cannot be split into words: {problem}")
            }
            CommandRefusal::Program {
                program,
                problem,
                place,
            } if program.is_empty() => write!(f, "{place} names no program: {problem}"),
            CommandRefusal::Program {
                program,
                problem,
                place,
            } => write!(f, "the program `{program}` in {place} {problem}"),
            CommandRefusal::Undetermined {
                wrapper,
                problem,
                place,
            } => write!(
                f,
                "cannot tell what `{wrapper}` in {place} would run: {problem}"
            ),
        }
    }
}

impl std::error::Error for CommandRefusal {}

/// Analyse `command` into what would run. See the module docs for the rules.
pub fn analyze(command: &str, opts: &ShellOptions) -> Result<CommandLine, CommandRefusal> {
    let place = "the command";
    check_characters(command, place)?;
    let leading = command
        .chars()
        .take_while(|c| is_blank_or_newline(*c))
        .count();
    let text = command.trim_matches(is_blank_or_newline);
    if text.is_empty() {
        return Err(CommandRefusal::Unsplittable {
            problem: "it is empty".into(),
            place: place.into(),
        });
    }
    let shell_rules = !opts.allow_shell_syntax;
    let mode = if shell_rules {
        Lexing::Shell
    } else {
        Lexing::Literal
    };
    let syntax = |found: String, at: usize| CommandRefusal::ShellSyntax {
        found,
        place: place.into(),
        column: leading + at + 1,
        excerpt: excerpt(text, at),
    };
    let tokens = lex(text, mode).map_err(|e| match e.kind {
        LexErrorKind::Expansion => syntax(e.what, e.at),
        LexErrorKind::Unsplittable => CommandRefusal::Unsplittable {
            problem: e.what,
            place: place.into(),
        },
    })?;
    let mut words = Vec::new();
    for token in tokens {
        match token {
            Token::Word(w) => words.push(w),
            Token::Op {
                op,
                text: op_text,
                at,
            } => {
                return Err(syntax(describe_op(op, &op_text), at));
            }
        }
    }
    if shell_rules {
        for w in &words {
            if let Some((found, at)) = brace_expansion(w).or_else(|| history_expansion(w)) {
                return Err(syntax(found, at));
            }
        }
    }
    let mut env = Vec::new();
    let mut first = 0;
    while let Some(w) = words.get(first) {
        let Some(assignment) = assignment(w) else {
            break;
        };
        if assignment.append && !shell_rules {
            // Without shell rules `A+=1` is just a word: the program's name.
            break;
        }
        if assignment.append {
            return Err(syntax(
                format!("`{}+=` (an appending assignment)", assignment.name),
                w.at,
            ));
        }
        env.push((assignment.name, assignment.value));
        first += 1;
    }
    let Some(program) = words.get(first) else {
        return Err(CommandRefusal::Program {
            program: String::new(),
            problem: "it only sets variables".into(),
            place: place.into(),
        });
    };
    if shell_rules && is_keyword(program) {
        return Err(syntax(
            format!("the shell keyword `{}`", program.text),
            program.at,
        ));
    }
    let argv: Vec<String> = words[first..].iter().map(|w| w.text.clone()).collect();
    let mut analysis = Analysis::new(*opts);
    let index = analysis.command(&argv, &Ctx::root(place))?;
    for (name, value) in &env {
        analysis.check_env(index, name, value);
    }
    Ok(CommandLine {
        argv,
        env,
        invocations: analysis.invocations,
        findings: analysis.findings,
    })
}

fn is_blank_or_newline(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n')
}

/// Refuse characters no program can receive (NUL) or that only serve to make
/// a command look different from what it is (control and bidi characters).
fn check_characters(text: &str, place: &str) -> Result<(), CommandRefusal> {
    for (column, c) in text.chars().enumerate() {
        let bad = match c {
            '\0' => Some("a NUL character, which no program can receive"),
            '\t' | '\n' => None,
            c if c.is_control() => Some("a control character"),
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => Some(
                "a bidirectional-text control character, which makes text display differently from what it is",
            ),
            _ => None,
        };
        if let Some(problem) = bad {
            return Err(CommandRefusal::Unsplittable {
                problem: format!("{problem} (U+{:04X}) at column {}", c as u32, column + 1),
                place: place.into(),
            });
        }
    }
    Ok(())
}

/// Up to 40 characters of `text` around char index `at`.
fn excerpt(text: &str, at: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = at.saturating_sub(20);
    let end = (at + 20).min(chars.len());
    let mut out: String = chars[start..end]
        .iter()
        .map(|c| if *c == '\n' { '⏎' } else { *c })
        .collect();
    if start > 0 {
        out.insert(0, '…');
    }
    if end < chars.len() {
        out.push('…');
    }
    out
}

/// `program args...` as one line of evidence.
fn argv_text(program: &str, args: &[String]) -> String {
    let mut text = program.to_string();
    for a in args {
        text.push(' ');
        text.push_str(a);
    }
    text
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_EVIDENCE {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_EVIDENCE).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// Lexing

/// How text is split: `Shell` as a POSIX shell would (operators and expansions
/// are syntax), `Literal` as the executor will run it (only quotes and
/// backslashes group words; everything else is an ordinary character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexing {
    Literal,
    Shell,
}

#[derive(Debug, Clone)]
struct Word {
    text: String,
    /// One flag per byte of `text`: true where the byte was quoted or escaped.
    quoted: Vec<bool>,
    /// Char index in the source where the word starts.
    at: usize,
}

impl Word {
    fn new(at: usize) -> Self {
        Self {
            text: String::new(),
            quoted: Vec::new(),
            at,
        }
    }

    fn push(&mut self, c: char, quoted: bool) {
        self.text.push(c);
        self.quoted
            .extend(std::iter::repeat_n(quoted, c.len_utf8()));
    }

    fn is_unquoted(&self) -> bool {
        self.quoted.iter().all(|q| !q)
    }

    /// Unquoted bytes, with their byte offsets.
    fn unquoted_bytes(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.text
            .bytes()
            .enumerate()
            .filter(|(i, _)| !self.quoted[*i])
    }

    /// The char column of byte offset `byte`, for messages.
    fn column_of(&self, byte: usize) -> usize {
        self.at + self.text[..byte].chars().count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Semi,
    Newline,
    Background,
    And,
    Or,
    Pipe,
    PipeStderr,
    LParen,
    RParen,
    Comment,
    Redirect(Redirect),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirect {
    Input,
    Output,
    Append,
    Clobber,
    ReadWrite,
    DupInput,
    DupOutput,
    OutputBoth,
    AppendBoth,
    HereDoc,
    HereString,
}

#[derive(Debug, Clone)]
enum Token {
    Word(Word),
    Op { op: Op, text: String, at: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LexErrorKind {
    /// Something a shell would expand or substitute.
    Expansion,
    /// Unbalanced quotes or a dangling backslash.
    Unsplittable,
}

#[derive(Debug, Clone)]
struct LexError {
    kind: LexErrorKind,
    what: String,
    at: usize,
}

fn describe_op(op: Op, text: &str) -> String {
    let what = match op {
        Op::Semi => "separates commands",
        Op::Newline => return "a newline, which separates commands".into(),
        Op::Background => "runs a command in the background",
        Op::And => "runs the next command if this one succeeds",
        Op::Or => "runs the next command if this one fails",
        Op::Pipe | Op::PipeStderr => "a pipe",
        Op::LParen | Op::RParen => "a subshell",
        Op::Comment => return "a comment".into(),
        Op::Redirect(Redirect::HereDoc) => "a here-document",
        Op::Redirect(Redirect::HereString) => "a here-string",
        Op::Redirect(_) => "a redirection",
    };
    format!("`{text}` ({what})")
}

/// Whether `$` followed by `next` is an expansion in a shell. A `$` before a
/// blank, the end, or punctuation that cannot start a parameter is literal.
fn dollar_expands(next: Option<char>, in_double_quotes: bool) -> bool {
    match next {
        None => false,
        Some(c) if c.is_whitespace() => false,
        Some('"') => !in_double_quotes,
        Some('/' | '.' | ',' | ':' | '%' | ']' | '}' | ')' | ';' | '|' | '&' | '<' | '>') => false,
        Some(_) => true,
    }
}

fn describe_dollar(chars: &[char], at: usize) -> String {
    let what = match (chars.get(at + 1), chars.get(at + 2)) {
        (Some('('), Some('(')) => "arithmetic expansion `$((...))`",
        (Some('('), _) => "command substitution `$(...)`",
        (Some('{'), _) => "parameter expansion `${...}`",
        (Some('['), _) => "arithmetic expansion `$[...]`",
        (Some('\''), _) => "ANSI-C quoting `$'...'`",
        (Some('"'), _) => "locale quoting `$\"...\"`",
        _ => {
            let mut name = String::from("$");
            name.extend(
                chars[at + 1..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .take(30),
            );
            if name.len() == 1
                && let Some(c) = chars.get(at + 1)
            {
                name.push(*c);
            }
            return format!("the variable expansion `{name}`");
        }
    };
    what.into()
}

fn lex(src: &str, mode: Lexing) -> Result<Vec<Token>, LexError> {
    let chars: Vec<char> = src.chars().collect();
    let shell = mode == Lexing::Shell;
    let mut out: Vec<Token> = Vec::new();
    let mut word: Option<Word> = None;
    let unsplittable = |what: String, at: usize| LexError {
        kind: LexErrorKind::Unsplittable,
        what,
        at,
    };
    let expansion = |what: String, at: usize| LexError {
        kind: LexErrorKind::Expansion,
        what,
        at,
    };
    fn flush(word: &mut Option<Word>, out: &mut Vec<Token>) {
        if let Some(w) = word.take() {
            out.push(Token::Word(w));
        }
    }
    fn push(word: &mut Option<Word>, c: char, quoted: bool, at: usize) {
        word.get_or_insert_with(|| Word::new(at)).push(c, quoted);
    }
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => {
                flush(&mut word, &mut out);
                i += 1;
            }
            '\n' => {
                flush(&mut word, &mut out);
                if shell {
                    out.push(Token::Op {
                        op: Op::Newline,
                        text: "\n".into(),
                        at: i,
                    });
                }
                i += 1;
            }
            '\\' => match chars.get(i + 1) {
                None => {
                    return Err(unsplittable(
                        "it ends with a backslash that escapes nothing".into(),
                        i,
                    ));
                }
                Some('\n') => i += 2,
                Some(&next) => {
                    push(&mut word, next, true, i);
                    i += 2;
                }
            },
            '\'' => {
                let open = i;
                word.get_or_insert_with(|| Word::new(open));
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(unsplittable(
                                format!("the single quote at column {} is never closed", open + 1),
                                open,
                            ));
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&q) => {
                            push(&mut word, q, true, i);
                            i += 1;
                        }
                    }
                }
            }
            '"' => {
                let open = i;
                word.get_or_insert_with(|| Word::new(open));
                i += 1;
                let unclosed = || {
                    unsplittable(
                        format!("the double quote at column {} is never closed", open + 1),
                        open,
                    )
                };
                loop {
                    match chars.get(i) {
                        None => return Err(unclosed()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => match chars.get(i + 1) {
                            Some(&n @ ('$' | '`' | '"' | '\\')) => {
                                push(&mut word, n, true, i);
                                i += 2;
                            }
                            Some('\n') => i += 2,
                            Some(_) => {
                                push(&mut word, '\\', true, i);
                                i += 1;
                            }
                            None => return Err(unclosed()),
                        },
                        Some('$') if shell && dollar_expands(chars.get(i + 1).copied(), true) => {
                            return Err(expansion(describe_dollar(&chars, i), i));
                        }
                        Some('`') if shell => {
                            return Err(expansion("command substitution with backticks".into(), i));
                        }
                        Some(&q) => {
                            push(&mut word, q, true, i);
                            i += 1;
                        }
                    }
                }
            }
            _ if !shell => {
                push(&mut word, c, false, i);
                i += 1;
            }
            '$' => {
                if dollar_expands(chars.get(i + 1).copied(), false) {
                    return Err(expansion(describe_dollar(&chars, i), i));
                }
                push(&mut word, '$', false, i);
                i += 1;
            }
            '`' => {
                return Err(expansion("command substitution with backticks".into(), i));
            }
            '#' if word.is_none() => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(chars.len(), |p| i + p);
                out.push(Token::Op {
                    op: Op::Comment,
                    text: chars[i..end].iter().collect(),
                    at: i,
                });
                i = end;
            }
            ';' | '&' | '|' | '(' | ')' => {
                flush(&mut word, &mut out);
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    (';', _) => (Op::Semi, 1),
                    ('&', Some('&')) => (Op::And, 2),
                    ('&', Some('>')) if chars.get(i + 2) == Some(&'>') => {
                        (Op::Redirect(Redirect::AppendBoth), 3)
                    }
                    ('&', Some('>')) => (Op::Redirect(Redirect::OutputBoth), 2),
                    ('&', _) => (Op::Background, 1),
                    ('|', Some('|')) => (Op::Or, 2),
                    ('|', Some('&')) => (Op::PipeStderr, 2),
                    ('|', _) => (Op::Pipe, 1),
                    ('(', _) => (Op::LParen, 1),
                    _ => (Op::RParen, 1),
                };
                out.push(Token::Op {
                    op,
                    text: chars[i..i + len].iter().collect(),
                    at: i,
                });
                i += len;
            }
            '<' | '>' => {
                // A word of digits right before the operator is its file descriptor.
                let io_number = word
                    .as_ref()
                    .is_some_and(|w| w.is_unquoted() && w.text.bytes().all(|b| b.is_ascii_digit()));
                let (mut text, at) = match (io_number, word.take()) {
                    (true, Some(w)) => (w.text, w.at),
                    (_, w) => {
                        if let Some(w) = w {
                            out.push(Token::Word(w));
                        }
                        (String::new(), i)
                    }
                };
                let next = chars.get(i + 1).copied();
                let next2 = chars.get(i + 2).copied();
                let (redirect, len) = match (c, next, next2) {
                    ('<', Some('<'), Some('<')) => (Redirect::HereString, 3),
                    ('<', Some('<'), Some('-')) => (Redirect::HereDoc, 3),
                    ('<', Some('<'), _) => (Redirect::HereDoc, 2),
                    ('<', Some('&'), _) => (Redirect::DupInput, 2),
                    ('<', Some('>'), _) => (Redirect::ReadWrite, 2),
                    ('<', Some('('), _) | ('>', Some('('), _) => {
                        return Err(expansion(format!("process substitution `{c}(...)`"), i));
                    }
                    ('<', _, _) => (Redirect::Input, 1),
                    ('>', Some('>'), _) => (Redirect::Append, 2),
                    ('>', Some('&'), _) => (Redirect::DupOutput, 2),
                    ('>', Some('|'), _) => (Redirect::Clobber, 2),
                    _ => (Redirect::Output, 1),
                };
                text.extend(&chars[i..i + len]);
                out.push(Token::Op {
                    op: Op::Redirect(redirect),
                    text,
                    at,
                });
                i += len;
            }
            _ => {
                push(&mut word, c, false, i);
                i += 1;
            }
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

/// Unquoted brace expansion (`{a,b}`, `{1..3}`): bash and zsh turn one word
/// into several (`{s,}udo` is `sudo udo`).
/// One pass with a stack, so a long word cannot make this slow.
fn brace_expansion(w: &Word) -> Option<(String, usize)> {
    let bytes = w.text.as_bytes();
    // Open braces: (byte offset, a `,` or `..` seen directly inside).
    let mut open: Vec<(usize, bool)> = Vec::new();
    for (j, b) in w.unquoted_bytes() {
        match b {
            b'{' => open.push((j, false)),
            b'}' => {
                if let Some((start, true)) = open.pop() {
                    return Some((
                        format!("the brace expansion `{}`", &w.text[start..=j]),
                        w.column_of(start),
                    ));
                }
            }
            b',' => {
                if let Some(top) = open.last_mut() {
                    top.1 = true;
                }
            }
            b'.' if bytes.get(j + 1) == Some(&b'.') && !w.quoted[j + 1] => {
                if let Some(top) = open.last_mut() {
                    top.1 = true;
                }
            }
            _ => {}
        }
    }
    None
}

/// Unquoted history expansion (`!!`, `!-1`, `!foo`), which an interactive
/// shell would replace. A lone `!` (as in `find . ! -name x`) is literal.
fn history_expansion(w: &Word) -> Option<(String, usize)> {
    let bytes = w.text.as_bytes();
    for (i, b) in w.unquoted_bytes() {
        if b == b'!'
            && let Some(next) = bytes.get(i + 1)
            && !matches!(next, b'=' | b'(')
        {
            let end = (i + 12).min(bytes.len());
            let shown = String::from_utf8_lossy(&bytes[i..end]).into_owned();
            return Some((format!("the history expansion `{shown}`"), w.column_of(i)));
        }
    }
    None
}

/// Unquoted glob characters, which a shell expands into file names.
fn unquoted_glob(w: &Word) -> Option<usize> {
    let mut open_bracket = None;
    for (i, b) in w.unquoted_bytes() {
        match b {
            b'*' | b'?' => return Some(i),
            b'[' => {
                open_bracket.get_or_insert(i);
            }
            b']' => {
                if let Some(open) = open_bracket {
                    return Some(open);
                }
            }
            _ => {}
        }
    }
    None
}

const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until", "do",
    "done", "in", "function", "coproc", "{", "}", "[[", "]]", "!", "repeat", "foreach", "end",
];

/// A shell keyword as the program. Quoted or not: a quoted keyword is an
/// ordinary word to a shell, but no real program has such a name, and judging
/// the text alone keeps quoting from changing any answer.
fn is_keyword(w: &Word) -> bool {
    KEYWORDS.contains(&w.text.as_str())
}

struct Assignment {
    name: String,
    value: String,
    append: bool,
}

/// `NAME=value` as a shell sees it: the name part unquoted and valid.
fn assignment(w: &Word) -> Option<Assignment> {
    let eq = w.text.find('=')?;
    if w.quoted[eq] || w.quoted[..eq].iter().any(|q| *q) {
        return None;
    }
    let (name, append) = match w.text[..eq].strip_suffix('+') {
        Some(name) => (name, true),
        None => (&w.text[..eq], false),
    };
    is_name(name).then(|| Assignment {
        name: name.to_string(),
        value: w.text[eq + 1..].to_string(),
        append,
    })
}

fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

// ---------------------------------------------------------------------------
// Analysis

/// Where in the recursion we are.
#[derive(Debug, Clone)]
struct Ctx {
    via: Vec<String>,
    depth: usize,
    /// Arguments will be appended at run time (`xargs`): a wrapper whose
    /// command would come from them cannot be determined.
    open_args: bool,
    /// Strings replaced at run time (`xargs -I X`, `find -exec {}`).
    placeholders: Vec<String>,
    /// The text being analysed, for messages.
    place: String,
    /// The wrappers around that text (not the shell it is given to).
    place_via: Vec<String>,
}

impl Ctx {
    fn root(place: &str) -> Self {
        Self {
            via: Vec::new(),
            depth: 0,
            open_args: false,
            placeholders: Vec::new(),
            place: place.into(),
            place_via: Vec::new(),
        }
    }

    fn inside(&self, wrapper: &str) -> Self {
        let mut ctx = self.clone();
        ctx.via.push(wrapper.to_string());
        ctx.depth += 1;
        ctx
    }

    fn has_placeholder(&self, word: &str) -> bool {
        self.placeholders.iter().any(|p| word.contains(p.as_str()))
    }

    /// The place, with the wrappers it is inside.
    fn describe(&self) -> String {
        if self.place_via.is_empty() {
            self.place.clone()
        } else {
            format!("{} (inside {})", self.place, self.place_via.join(" → "))
        }
    }
}

struct Analysis {
    opts: ShellOptions,
    invocations: Vec<Invocation>,
    findings: Vec<Finding>,
    /// Findings already recorded, so each is listed once without a quadratic scan.
    seen: std::collections::HashSet<(usize, FindingKind, String)>,
}

/// What a wrapper runs.
enum Inner {
    /// An argv, analysed as a command.
    Argv(Vec<String>),
    /// Text a shell runs (`eval`).
    Script(String),
    /// Nothing runs (`command -v`, `sudo -l`).
    Nothing,
    /// No command was given: the wrapper does something else (`env` prints),
    /// unless arguments are appended at run time.
    Missing,
}

impl Analysis {
    fn new(opts: ShellOptions) -> Self {
        Self {
            opts,
            invocations: Vec::new(),
            findings: Vec::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    fn found(&mut self, invocation: usize, what: FindingKind, evidence: impl AsRef<str>) {
        let evidence = truncate(evidence.as_ref());
        if self.seen.insert((invocation, what, evidence.clone())) {
            self.findings.push(Finding {
                program: self.invocations[invocation].argv[0].clone(),
                invocation,
                what,
                evidence,
            });
        }
    }

    fn undetermined(&self, wrapper: &str, problem: impl Into<String>, ctx: &Ctx) -> CommandRefusal {
        CommandRefusal::Undetermined {
            wrapper: wrapper.to_string(),
            problem: problem.into(),
            place: ctx.describe(),
        }
    }

    fn check_env(&mut self, invocation: usize, name: &str, value: &str) {
        if env_runs_code(name) {
            self.found(invocation, FindingKind::ExecEnv, format!("{name}={value}"));
        }
    }

    /// Record one command and everything inside it; returns its index.
    fn command(&mut self, argv: &[String], ctx: &Ctx) -> Result<usize, CommandRefusal> {
        let Some(written) = argv.first() else {
            return Err(CommandRefusal::Program {
                program: String::new(),
                problem: "a wrapper was given no command".into(),
                place: ctx.describe(),
            });
        };
        if ctx.depth > MAX_DEPTH {
            return Err(self.undetermined(
                written,
                format!("wrappers and scripts nest more than {MAX_DEPTH} deep"),
                ctx,
            ));
        }
        if ctx.has_placeholder(written) {
            return Err(self.undetermined(
                ctx.via.last().map_or("", String::as_str),
                format!("the program `{written}` is replaced by input at run time"),
                ctx,
            ));
        }
        if let Err(problem) = check_program(written) {
            return Err(CommandRefusal::Program {
                program: written.clone(),
                problem: problem.into(),
                place: ctx.describe(),
            });
        }
        let program = basename(written).to_string();
        let mut normalized = argv.to_vec();
        normalized[0] = program.clone();
        let index = self.invocations.len();
        self.invocations.push(Invocation {
            argv: normalized,
            program_as_written: written.clone(),
            via: ctx.via.clone(),
        });
        let args = &argv[1..];
        if ctx.open_args {
            self.found(
                index,
                FindingKind::InputArguments,
                "more arguments are appended from input at run time",
            );
        }
        if let Some(arg) = args.iter().find(|a| ctx.has_placeholder(a)) {
            self.found(index, FindingKind::InputArguments, arg);
        }
        if is_path_program(written) {
            self.found(index, FindingKind::PathProgram, written);
        }
        self.inspect(index, &program, args, ctx)?;
        Ok(index)
    }

    /// Findings for `program` and the commands inside it.
    fn inspect(
        &mut self,
        index: usize,
        program: &str,
        args: &[String],
        ctx: &Ctx,
    ) -> Result<(), CommandRefusal> {
        if is_shell(program) {
            return self.shell(index, program, args, ctx);
        }
        // Checked here, not only at a script's first word, so that `command
        // trap ...` and `builtin alias ...` are caught too.
        if SCRIPT_BUILTINS_REFUSED.contains(&program) {
            return Err(self.undetermined(
                program,
                format!("the shell builtin `{program}` keeps text to run later as shell code, or changes what a name runs"),
                ctx,
            ));
        }
        if let Some(inner) = self.wrapper(index, program, args, ctx)? {
            return match inner {
                Inner::Argv(argv) => self.command(&argv, &ctx.inside(program)).map(|_| ()),
                Inner::Script(text) => self.script(&text, program, index, &ctx.inside(program)),
                Inner::Nothing | Inner::Missing => Ok(()),
            };
        }
        match program {
            "find" => return self.find(index, args, ctx),
            "git" => return self.git(index, args, ctx),
            "awk" | "gawk" | "mawk" | "nawk" => self.awk(index, args),
            "sed" | "gsed" => self.sed(index, args),
            "export" | "declare" | "typeset" | "local" | "readonly" => {
                for a in args {
                    if let Some((name, value)) = a.split_once('=') {
                        self.check_env(index, name, value);
                    }
                }
            }
            "fd" | "fdfind" => return self.fd(index, args, ctx),
            "sort" => {
                for a in args
                    .iter()
                    .filter(|a| is_long_option(a, "--compress-program"))
                {
                    self.found(index, FindingKind::ExecFlag, a);
                }
            }
            "wget" => {
                for a in args.iter().filter(|a| is_long_option(a, "--use-askpass")) {
                    self.found(index, FindingKind::ExecFlag, a);
                }
            }
            "rg" => {
                for (i, a) in args.iter().enumerate() {
                    if is_long_option_exact(a, "--pre") {
                        let value = if a.contains('=') {
                            ""
                        } else {
                            args.get(i + 1).map_or("", String::as_str)
                        };
                        self.found(
                            index,
                            FindingKind::ExecFlag,
                            format!("{a} {value}").trim_end(),
                        );
                    }
                }
            }
            "tar" | "gtar" | "bsdtar" => self.tar(index, args),
            "rsync" => self.rsync(index, args),
            "ssh" | "scp" | "sftp" | "slogin" => self.ssh(index, program, args),
            "zip" => self.zip(index, args),
            "cargo" => self.cargo(index, args),
            "npm" | "yarn" | "yarnpkg" | "pnpm" => self.node_package_manager(index, program, args),
            "go" => self.go(index, args),
            "uv" | "pipx" | "poetry" | "pdm" | "hatch" => {
                self.python_package_manager(index, program, args);
            }
            p if is_versioned(p, "pip") => self.python_package_manager(index, "pip", args),
            _ => {}
        }
        if is_interpreter(program) {
            let evidence = if args.is_empty() {
                "(reads code from standard input)".to_string()
            } else {
                args.join(" ")
            };
            self.found(index, FindingKind::Interpreter, evidence);
        } else if SHELL_ESCAPES.contains(&program) {
            self.found(
                index,
                FindingKind::ShellEscape,
                "interactive: can start a shell or run commands",
            );
        } else if BUILD_TOOLS.contains(&program) {
            self.found(
                index,
                FindingKind::RunsProjectCode,
                argv_text(program, args),
            );
        } else if LAUNCHERS.contains(&program) {
            self.found(
                index,
                FindingKind::ExecFlag,
                format!(
                    "runs commands given to it, which are not analysed: {}",
                    args.join(" ")
                ),
            );
        }
        Ok(())
    }

    /// `sh`, `bash -c SCRIPT`, `bash script.sh`, ...
    fn shell(
        &mut self,
        index: usize,
        shell: &str,
        args: &[String],
        ctx: &Ctx,
    ) -> Result<(), CommandRefusal> {
        let mut command_mode = false;
        let mut stdin_mode = false;
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" || a == "-" {
                i += 1;
                break;
            }
            if let Some(long) = a.strip_prefix("--") {
                match long {
                    "rcfile" | "init-file" => {
                        let file = args.get(i + 1).map_or("", String::as_str);
                        self.found(index, FindingKind::Interpreter, format!("{a} {file}"));
                        i += 2;
                        continue;
                    }
                    "emulate" if shell == "zsh" => {
                        i += 2;
                        continue;
                    }
                    "login" | "noprofile" | "norc" | "posix" | "verbose" | "noediting"
                    | "restricted" | "debugger" | "dump-strings" | "dump-po-strings"
                    | "pretty-print" | "help" | "version" => {}
                    _ if shell == "zsh" && !long.contains('=') => {}
                    _ => {
                        return Err(self.undetermined(
                            shell,
                            format!("the option `{a}` is not understood"),
                            ctx,
                        ));
                    }
                }
                i += 1;
                continue;
            }
            if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 {
                let plus = a.starts_with('+');
                let mut values = 0;
                for ch in a[1..].chars() {
                    match ch {
                        'c' if !plus => command_mode = true,
                        's' if !plus => stdin_mode = true,
                        'o' | 'O' => values += 1,
                        c if c.is_ascii_alphanumeric() && c != 'c' => {}
                        _ => {
                            return Err(self.undetermined(
                                shell,
                                format!("the option `{a}` is not understood"),
                                ctx,
                            ));
                        }
                    }
                }
                i += 1 + values;
                continue;
            }
            break;
        }
        let operands = args.get(i..).unwrap_or_default();
        if command_mode {
            let Some(script) = operands.first() else {
                return Err(self.undetermined(shell, format!("`{shell} -c` has no script"), ctx));
            };
            if ctx.has_placeholder(script) {
                return Err(self.undetermined(
                    shell,
                    format!("the script `{script}` is filled in from input at run time"),
                    ctx,
                ));
            }
            return self.script(script, shell, index, &ctx.inside(shell));
        }
        if ctx.open_args {
            // Appended arguments could be `-c SCRIPT`.
            self.found(
                index,
                FindingKind::ExecFlag,
                "runs a command read from input at run time",
            );
        }
        let evidence = match operands.first() {
            Some(file) if !stdin_mode => format!("runs the script file {file}"),
            _ => "reads commands from standard input".to_string(),
        };
        self.found(index, FindingKind::Interpreter, evidence);
        Ok(())
    }

    /// Text that a real shell runs (`sh -c SCRIPT`, `eval`).
    fn script(
        &mut self,
        text: &str,
        shell: &str,
        shell_index: usize,
        ctx: &Ctx,
    ) -> Result<(), CommandRefusal> {
        let mut ctx = ctx.clone();
        ctx.place = if shell == "eval" {
            "the text given to `eval`".into()
        } else {
            format!("the script given to `{shell} -c`")
        };
        ctx.place_via = ctx.via[..ctx.via.len().saturating_sub(1)].to_vec();
        // The script's own words are fixed; what the outer wrapper appends
        // becomes `$0 $1 ...`, which the script cannot use without `$`.
        ctx.open_args = false;
        let place = ctx.describe();
        if ctx.has_placeholder(text) {
            return Err(self.undetermined(
                shell,
                format!(
                    "the text `{}` is filled in from input at run time",
                    truncate(text)
                ),
                &ctx,
            ));
        }
        if ctx.depth > MAX_DEPTH {
            return Err(self.undetermined(
                shell,
                format!("wrappers and scripts nest more than {MAX_DEPTH} deep"),
                &ctx,
            ));
        }
        check_characters(text, &place)?;
        let allow = self.opts.allow_shell_syntax;
        let leading = text.chars().take_while(|c| is_blank_or_newline(*c)).count();
        let body = text.trim_matches(is_blank_or_newline);
        // What a shell would do differently from plain words: SHELL-001 when the
        // policy forbids shell syntax, CMD-002 when it allows the syntax but the
        // effect depends on run-time values.
        let refuse = |found: String, at: usize| {
            if allow {
                CommandRefusal::Undetermined {
                    wrapper: shell.to_string(),
                    problem: format!(
                        "{found} at column {} of the script decides what runs only at run time",
                        leading + at + 1
                    ),
                    place: place.clone(),
                }
            } else {
                CommandRefusal::ShellSyntax {
                    found,
                    place: place.clone(),
                    column: leading + at + 1,
                    excerpt: excerpt(body, at),
                }
            }
        };
        let tokens = lex(body, Lexing::Shell).map_err(|e| match e.kind {
            LexErrorKind::Expansion => refuse(e.what, e.at),
            LexErrorKind::Unsplittable => CommandRefusal::Unsplittable {
                problem: e.what,
                place: place.clone(),
            },
        })?;
        let mut commands: Vec<SimpleCommand> = vec![SimpleCommand::default()];
        let mut tokens = tokens.into_iter().peekable();
        while let Some(token) = tokens.next() {
            let current = commands.len() - 1;
            match token {
                Token::Word(w) => commands[current].words.push(w),
                Token::Op { op, text, at } => {
                    let separator = matches!(
                        op,
                        Op::Semi
                            | Op::Newline
                            | Op::Background
                            | Op::And
                            | Op::Or
                            | Op::Pipe
                            | Op::PipeStderr
                    );
                    match op {
                        _ if !allow => return Err(refuse(describe_op(op, &text), at)),
                        Op::Comment => {}
                        _ if separator => commands.push(SimpleCommand::default()),
                        Op::LParen | Op::RParen | Op::Redirect(Redirect::HereDoc) => {
                            return Err(refuse(describe_op(op, &text), at));
                        }
                        Op::Redirect(redirect) => {
                            let target = match tokens.next() {
                                Some(Token::Word(w)) => w,
                                _ => {
                                    return Err(refuse(format!("`{text}` without a target"), at));
                                }
                            };
                            if let Some(at) = unquoted_glob(&target) {
                                return Err(refuse(
                                    format!("the glob in the redirection target `{}`", target.text),
                                    target.column_of(at),
                                ));
                            }
                            if redirect_writes(redirect, &target.text) {
                                commands[current]
                                    .writes
                                    .push(format!("{text} {}", target.text));
                            }
                        }
                        _ => unreachable!("every operator is handled above"),
                    }
                }
            }
        }
        for command in commands {
            self.simple_command(command, shell, shell_index, &ctx, &refuse)?;
        }
        Ok(())
    }

    fn simple_command(
        &mut self,
        command: SimpleCommand,
        shell: &str,
        shell_index: usize,
        ctx: &Ctx,
        refuse: &dyn Fn(String, usize) -> CommandRefusal,
    ) -> Result<(), CommandRefusal> {
        // Quoted text with `$(`, `${`, `$[` or a backtick is still code to bash
        // in places this analysis cannot see (arithmetic subscripts, `PS4` under
        // `set -x`, `test -v`), assignments included.
        for w in &command.words {
            if let Some(found) = ["$(", "${", "$[", "`"]
                .into_iter()
                .find(|s| w.text.contains(s))
            {
                return Err(self.undetermined(
                    shell,
                    format!(
                        "`{}` contains `{found}`, which bash still evaluates in arithmetic, `PS4`, `test -v` and similar",
                        w.text
                    ),
                    ctx,
                ));
            }
        }
        let mut words = command.words.as_slice();
        let mut assignments = Vec::new();
        while let Some((w, rest)) = words.split_first() {
            let Some(assignment) = assignment(w) else {
                break;
            };
            assignments.push(assignment);
            words = rest;
        }
        // `! cmd` negates the exit status; the command still runs.
        if self.opts.allow_shell_syntax
            && let Some((w, rest)) = words.split_first()
            && w.is_unquoted()
            && w.text == "!"
        {
            words = rest;
        }
        if let Some(first) = words.first()
            && is_keyword(first)
        {
            return Err(refuse(
                format!("the shell keyword `{}`", first.text),
                first.at,
            ));
        }
        for (position, w) in words.iter().enumerate() {
            if let Some((found, at)) = brace_expansion(w) {
                return Err(refuse(found, at));
            }
            // In command position a glob is CMD-001, checked with the program.
            if position > 0
                && let Some(at) = unquoted_glob(w)
            {
                return Err(refuse(
                    format!(
                        "the glob `{}` (the shell would replace it with file names, which may read as options such as `-delete`)",
                        w.text
                    ),
                    w.column_of(at),
                ));
            }
        }
        let argv: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
        let owner = match argv.first() {
            None => shell_index,
            Some(_) => self.command(&argv, ctx)?,
        };
        for a in assignments {
            self.check_env(owner, &a.name, &a.value);
        }
        for write in command.writes {
            self.found(owner, FindingKind::WriteFlag, write);
        }
        Ok(())
    }

    /// Known wrappers: `Some(inner)` when `program` is one.
    fn wrapper(
        &mut self,
        index: usize,
        program: &str,
        args: &[String],
        ctx: &Ctx,
    ) -> Result<Option<Inner>, CommandRefusal> {
        let Some((spec, kind)) = wrapper_spec(program) else {
            return Ok(None);
        };
        let parsed = parse_options(args, &spec)
            .map_err(|problem| self.undetermined(program, problem, ctx))?;
        if parsed.stop {
            return Ok(Some(Inner::Nothing));
        }
        let operands = parsed.operands;
        let value_of = |names: &[&str]| {
            parsed
                .found
                .iter()
                .rev()
                .find(|(o, _)| names.contains(&o.as_str()))
                .map(|(_, v)| v.clone())
        };
        // Arguments appended by `xargs` can decide what this wrapper runs: they
        // become its command when it has none (`xargs sudo`), shell code
        // (`eval`, `watch`, `sg`), or options of a parser that permutes (`su`,
        // `script`). The wrapper stays an invocation, so a rule can still deny
        // it, and the finding says its command is read from input.
        let appended_decide = match kind {
            WrapperKind::Eval
            | WrapperKind::ShellCommandOperand
            | WrapperKind::UserShell
            | WrapperKind::ScriptCommand => true,
            WrapperKind::Watch => value_of(&["-x", "--exec"]).is_none(),
            // Without a command xargs would run `echo`, busybox nothing.
            WrapperKind::Xargs | WrapperKind::Applet => operands.is_empty(),
            // The others: when no command is found below (`Inner::Missing`).
            _ => false,
        };
        if ctx.open_args && appended_decide {
            self.found(
                index,
                FindingKind::ExecFlag,
                "runs a command read from input at run time",
            );
            if matches!(kind, WrapperKind::Applet) {
                return Ok(Some(Inner::Nothing));
            }
        }
        let inner = match kind {
            WrapperKind::Argv { operands_before } => {
                if operands.len() <= operands_before {
                    Inner::Missing
                } else {
                    Inner::Argv(operands[operands_before..].to_vec())
                }
            }
            WrapperKind::Assignments { any_equals } => {
                let mut rest = operands.as_slice();
                while let Some((a, tail)) = rest.split_first() {
                    let Some((name, value)) = a.split_once('=') else {
                        break;
                    };
                    if !any_equals && name.is_empty() {
                        break;
                    }
                    self.check_env(index, name, value);
                    rest = tail;
                }
                if rest.is_empty() {
                    Inner::Missing
                } else {
                    Inner::Argv(rest.to_vec())
                }
            }
            WrapperKind::Xargs => {
                let replace = value_of(&["-I", "-i", "--replace"])
                    .map(|v| v.unwrap_or_else(|| "{}".to_string()));
                let command = if operands.is_empty() {
                    vec!["echo".to_string()]
                } else {
                    operands
                };
                self.found(
                    index,
                    FindingKind::ExecFlag,
                    format!(
                        "runs `{}` with arguments read from input",
                        command.join(" ")
                    ),
                );
                let mut inner = ctx.inside(program);
                match replace {
                    Some(p) if !p.is_empty() => inner.placeholders.push(p),
                    _ => inner.open_args = true,
                }
                self.command(&command, &inner)?;
                Inner::Nothing
            }
            WrapperKind::Applet => match operands.first() {
                None => {
                    return Err(self.undetermined(program, "no applet is named", ctx));
                }
                Some(applet) if applet.starts_with('-') => {
                    return Err(self.undetermined(
                        program,
                        format!("the option `{applet}` is not understood"),
                        ctx,
                    ));
                }
                Some(_) => Inner::Argv(operands),
            },
            WrapperKind::UserShell => {
                let shell = value_of(&["-s", "--shell"])
                    .flatten()
                    .unwrap_or_else(|| "sh".to_string());
                let user_given = value_of(&["-u", "--user"]).is_some();
                if user_given && program == "runuser" {
                    // `runuser -u USER COMMAND ARGS`: no shell involved.
                    if operands.is_empty() {
                        Inner::Missing
                    } else {
                        Inner::Argv(operands)
                    }
                } else {
                    // `su [-] [USER [ARGS]] [-c CMD]`: ARGS go to the user's shell.
                    let mut argv = vec![shell];
                    if let Some(script) = value_of(&["-c", "--command", "--session-command"]) {
                        argv.push("-c".into());
                        argv.push(script.unwrap_or_default());
                    }
                    argv.extend(operands.into_iter().skip(1));
                    Inner::Argv(argv)
                }
            }
            WrapperKind::ShellCommandOperand => {
                // `sg GROUP [-c] COMMAND` (COMMAND is run by /bin/sh -c).
                let mut rest = operands.as_slice();
                if rest.first().is_some_and(|a| a == "-") {
                    rest = &rest[1..];
                }
                rest = rest.get(1..).unwrap_or_default();
                if rest.first().is_some_and(|a| a == "-c") {
                    rest = &rest[1..];
                }
                match rest.first() {
                    None => Inner::Missing,
                    Some(script) => Inner::Argv(vec!["sh".into(), "-c".into(), script.clone()]),
                }
            }
            WrapperKind::Flock => {
                // `flock [opts] FILE -c COMMAND`, `flock [opts] FILE COMMAND ARGS`, `flock FD`.
                match operands.get(1).map(String::as_str) {
                    None => Inner::Missing,
                    Some("-c" | "--command") => match operands.get(2) {
                        Some(script) => Inner::Argv(vec!["sh".into(), "-c".into(), script.clone()]),
                        None => {
                            return Err(self.undetermined(program, "`-c` has no command", ctx));
                        }
                    },
                    Some(_) => Inner::Argv(operands[1..].to_vec()),
                }
            }
            WrapperKind::Watch => {
                if value_of(&["-x", "--exec"]).is_some() {
                    if operands.is_empty() {
                        Inner::Missing
                    } else {
                        Inner::Argv(operands)
                    }
                } else if operands.is_empty() {
                    Inner::Missing
                } else {
                    Inner::Argv(vec!["sh".into(), "-c".into(), operands.join(" ")])
                }
            }
            WrapperKind::ScriptCommand => match value_of(&["-c", "--command"]) {
                Some(script) => {
                    Inner::Argv(vec!["sh".into(), "-c".into(), script.unwrap_or_default()])
                }
                None => {
                    self.found(
                        index,
                        FindingKind::ShellEscape,
                        "starts an interactive shell",
                    );
                    Inner::Nothing
                }
            },
            WrapperKind::Eval => {
                if operands.is_empty() {
                    Inner::Missing
                } else {
                    Inner::Script(operands.join(" "))
                }
            }
        };
        if ctx.open_args && matches!(inner, Inner::Missing) {
            self.found(
                index,
                FindingKind::ExecFlag,
                "runs a command read from input at run time",
            );
        }
        Ok(Some(inner))
    }

    /// `fd PATTERN -x CMD ARGS` runs CMD for each result (`-X`: once, with all).
    fn fd(&mut self, index: usize, args: &[String], ctx: &Ctx) -> Result<(), CommandRefusal> {
        let Some(at) = args
            .iter()
            .position(|a| matches!(a.as_str(), "-x" | "--exec" | "-X" | "--exec-batch"))
        else {
            return Ok(());
        };
        let end = args[at + 1..]
            .iter()
            .position(|a| a == ";")
            .map_or(args.len(), |p| at + 1 + p);
        let inner = &args[at + 1..end];
        self.found(
            index,
            FindingKind::ExecFlag,
            format!("{} {}", args[at], inner.join(" ")),
        );
        if !inner.is_empty() {
            let mut c = ctx.inside("fd");
            c.placeholders
                .extend(["{}", "{/}", "{//}", "{.}", "{/.}"].map(String::from));
            self.command(inner, &c)?;
        }
        Ok(())
    }

    fn find(&mut self, index: usize, args: &[String], ctx: &Ctx) -> Result<(), CommandRefusal> {
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            match a {
                "-exec" | "-execdir" | "-ok" | "-okdir" => {
                    let start = i + 1;
                    let mut end = start;
                    while end < args.len()
                        && args[end] != ";"
                        && !(args[end] == "+" && end > start && args[end - 1] == "{}")
                    {
                        end += 1;
                    }
                    let inner = &args[start..end];
                    let terminator = args.get(end).map_or("", String::as_str);
                    self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!("{a} {} {terminator}", inner.join(" ")),
                    );
                    if !inner.is_empty() {
                        let mut c = ctx.inside("find");
                        c.placeholders.push("{}".into());
                        self.command(inner, &c)?;
                    }
                    i = end + 1;
                    continue;
                }
                "-delete" => self.found(index, FindingKind::DeleteFlag, a),
                "-fprint" | "-fprint0" | "-fprintf" | "-fls" => {
                    let file = args.get(i + 1).map_or("", String::as_str);
                    self.found(index, FindingKind::WriteFlag, format!("{a} {file}"));
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    fn git(&mut self, index: usize, args: &[String], ctx: &Ctx) -> Result<(), CommandRefusal> {
        let (globals, sub_at) = git_global_options(args);
        for (option, value) in &globals {
            let value = value.as_deref().unwrap_or("");
            match option.as_str() {
                "-c" => {
                    let key = value.split('=').next().unwrap_or("");
                    if !git_key_is_safe(key) {
                        self.found(index, FindingKind::ExecFlag, format!("-c {value}"));
                    }
                }
                "--config-env" => {
                    self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!("--config-env {value}"),
                    );
                }
                "--exec-path" if !value.is_empty() => {
                    self.found(index, FindingKind::ExecFlag, format!("--exec-path={value}"));
                }
                _ => {}
            }
        }
        let Some(sub) = args.get(sub_at).map(String::as_str) else {
            return Ok(());
        };
        let rest = &args[sub_at + 1..];
        const EXEC_OPTIONS: &[&str] = &[
            "--ext-diff",
            "--upload-pack",
            "--receive-pack",
            "--exec",
            "--open-files-in-pager",
            "--extcmd",
            "--to-cmd",
            "--cc-cmd",
            "--sendmail-cmd",
            "--header-cmd",
            "--smtp-server",
        ];
        for (i, a) in rest.iter().enumerate() {
            if a.starts_with("--")
                && EXEC_OPTIONS.iter().any(|o| is_long_option(a, o))
                && !a.starts_with("--exec-path")
            {
                let value = if a.contains('=') {
                    String::new()
                } else {
                    rest.get(i + 1).cloned().unwrap_or_default()
                };
                self.found(
                    index,
                    FindingKind::ExecFlag,
                    format!("{a} {value}").trim_end(),
                );
            }
            if matches!(sub, "clone" | "init") && is_long_option(a, "--template") {
                self.found(index, FindingKind::ExecFlag, a);
            }
            if a.starts_with("ext::") || a.starts_with("fd::") {
                self.found(index, FindingKind::ExecFlag, a);
            }
            let short_exec = match sub {
                "clone" | "ls-remote" | "fetch-pack" => a.starts_with("-u"),
                "rebase" | "difftool" => a.starts_with("-x"),
                "grep" => a.starts_with("-O"),
                _ => false,
            };
            if short_exec {
                let value = rest.get(i + 1).map_or("", String::as_str);
                self.found(index, FindingKind::ExecFlag, format!("{a} {value}"));
            }
            if sub == "clone"
                && (a == "-c" || a == "--config")
                && let Some(kv) = rest.get(i + 1)
                && !git_key_is_safe(kv.split('=').next().unwrap_or(""))
            {
                self.found(index, FindingKind::ExecFlag, format!("{a} {kv}"));
            }
            if sub == "clone"
                && let Some(kv) = a.strip_prefix("--config=")
                && !git_key_is_safe(kv.split('=').next().unwrap_or(""))
            {
                self.found(index, FindingKind::ExecFlag, a);
            }
        }
        match sub {
            "config" => self.git_config(index, rest),
            "filter-branch" | "instaweb" | "difftool" | "mergetool" => {
                self.found(
                    index,
                    FindingKind::ExecFlag,
                    format!("git {sub} runs commands from its options or configuration"),
                );
            }
            "submodule" if rest.iter().any(|a| a == "foreach") => {
                self.found(index, FindingKind::ExecFlag, rest.join(" "));
            }
            "hook" => self.found(index, FindingKind::ExecFlag, rest.join(" ")),
            "bisect" if rest.first().is_some_and(|a| a == "run") => {
                self.found(index, FindingKind::ExecFlag, rest.join(" "));
                if rest.len() > 1 {
                    self.command(&rest[1..], &ctx.inside("git"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `git config KEY VALUE` that sets a key able to run commands.
    fn git_config(&mut self, index: usize, rest: &[String]) {
        const READS: &[&str] = &[
            "--get",
            "--get-all",
            "--get-regexp",
            "--get-urlmatch",
            "--get-color",
            "--get-colorbool",
            "--list",
            "-l",
            "--unset",
            "--unset-all",
            "--remove-section",
            "--rename-section",
        ];
        if rest.iter().any(|a| a == "--edit" || a == "-e") {
            self.found(
                index,
                FindingKind::ShellEscape,
                "git config --edit opens an editor",
            );
            return;
        }
        if rest.iter().any(|a| READS.contains(&a.as_str())) {
            return;
        }
        let mut i = 0;
        let mut subcommand_seen = false;
        while i < rest.len() {
            let a = rest[i].as_str();
            if a.starts_with('-') {
                if matches!(
                    a,
                    "-f" | "--file" | "--blob" | "--type" | "--default" | "--comment" | "--value"
                ) {
                    i += 1;
                }
                i += 1;
                continue;
            }
            if !subcommand_seen {
                subcommand_seen = true;
                match a {
                    "set" => {
                        i += 1;
                        continue;
                    }
                    "edit" => {
                        self.found(
                            index,
                            FindingKind::ShellEscape,
                            "git config edit opens an editor",
                        );
                        return;
                    }
                    "get" | "list" | "unset" | "rename-section" | "remove-section" => return,
                    _ => {}
                }
            }
            if !git_key_is_safe(a) {
                let value = rest.get(i + 1).map_or("", String::as_str);
                self.found(index, FindingKind::ExecFlag, format!("config {a} {value}"));
            }
            return;
        }
    }

    fn awk(&mut self, index: usize, args: &[String]) {
        let mut programs: Vec<String> = Vec::new();
        let mut from_file = false;
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" {
                i += 1;
                break;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let takes_value = matches!(
                    name,
                    "file" | "exec" | "source" | "include" | "load" | "field-separator" | "assign"
                );
                let value = match (takes_value, value) {
                    (true, None) => {
                        i += 1;
                        args.get(i).cloned()
                    }
                    (_, v) => v,
                };
                match name {
                    "file" | "exec" | "include" => {
                        from_file = true;
                        self.found(
                            index,
                            FindingKind::ExecFlag,
                            format!(
                                "--{name} {} (a program from a file, not inspected)",
                                value.unwrap_or_default()
                            ),
                        );
                    }
                    "load" => self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!(
                            "--load {} (loads a native extension)",
                            value.unwrap_or_default()
                        ),
                    ),
                    "source" => programs.extend(value),
                    _ => {}
                }
                i += 1;
                continue;
            }
            if a.starts_with('-') && a.len() > 1 {
                let flag = &a[1..2];
                let attached = &a[2..];
                let value = |i: &mut usize| {
                    if attached.is_empty() {
                        *i += 1;
                        args.get(*i).cloned().unwrap_or_default()
                    } else {
                        attached.to_string()
                    }
                };
                match flag {
                    "f" | "E" | "i" => {
                        from_file = true;
                        let file = value(&mut i);
                        self.found(
                            index,
                            FindingKind::ExecFlag,
                            format!("-{flag} {file} (a program from a file, not inspected)"),
                        );
                    }
                    "l" => {
                        let lib = value(&mut i);
                        self.found(
                            index,
                            FindingKind::ExecFlag,
                            format!("-l {lib} (loads a native extension)"),
                        );
                    }
                    "e" => programs.push(value(&mut i)),
                    "W" => {
                        let option = value(&mut i);
                        if option.starts_with('e') {
                            from_file = true;
                            self.found(
                                index,
                                FindingKind::ExecFlag,
                                format!("-W {option} (a program from a file, not inspected)"),
                            );
                        }
                    }
                    "F" | "v" => {
                        value(&mut i);
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            break;
        }
        if !from_file && programs.is_empty() {
            programs.extend(args.get(i).cloned());
        }
        for program in programs {
            for (what, evidence) in awk_capabilities(&program) {
                self.found(index, what, evidence);
            }
        }
    }

    fn sed(&mut self, index: usize, args: &[String]) {
        let mut scripts: Vec<String> = Vec::new();
        let mut sandbox = false;
        let mut i = 0;
        let mut first_operand = None;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" {
                if first_operand.is_none() {
                    first_operand = args.get(i + 1).cloned();
                }
                break;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let takes = |full: &str| name.len() >= 2 && full.starts_with(name);
                if takes("expression") {
                    let v = value.or_else(|| {
                        i += 1;
                        args.get(i).cloned()
                    });
                    scripts.extend(v);
                } else if takes("file") {
                    let v = value.or_else(|| {
                        i += 1;
                        args.get(i).cloned()
                    });
                    self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!(
                            "--file {} (a script from a file, not inspected)",
                            v.unwrap_or_default()
                        ),
                    );
                } else if takes("sandbox") {
                    sandbox = true;
                } else if takes("line-length") && value.is_none() {
                    i += 1;
                }
                i += 1;
                continue;
            }
            if a.starts_with('-') && a.len() > 1 {
                // A cluster such as `-ne SCRIPT` or `-i.bak`.
                for (k, ch) in a.char_indices().skip(1) {
                    let rest = &a[k + ch.len_utf8()..];
                    match ch {
                        'e' | 'f' | 'l' => {
                            let v = if rest.is_empty() {
                                i += 1;
                                args.get(i).cloned().unwrap_or_default()
                            } else {
                                rest.to_string()
                            };
                            match ch {
                                'e' => scripts.push(v),
                                'f' => self.found(
                                    index,
                                    FindingKind::ExecFlag,
                                    format!("-f {v} (a script from a file, not inspected)"),
                                ),
                                _ => {}
                            }
                            break;
                        }
                        'i' => break,
                        _ => {}
                    }
                }
                i += 1;
                continue;
            }
            if first_operand.is_none() {
                first_operand = Some(a.to_string());
            }
            i += 1;
        }
        if scripts.is_empty() {
            scripts.extend(first_operand);
        }
        if sandbox {
            return;
        }
        let script = scripts.join("\n");
        for (what, evidence) in sed_capabilities(&script) {
            self.found(index, what, evidence);
        }
    }

    fn tar(&mut self, index: usize, args: &[String]) {
        const EXEC: &[&str] = &[
            "--checkpoint-action",
            "--to-command",
            "--use-compress-program",
            "--info-script",
            "--new-volume-script",
            "--rsh-command",
            "--rmt-command",
        ];
        for (i, a) in args.iter().enumerate() {
            if a.starts_with("--") {
                if EXEC.iter().any(|o| is_long_option(a, o)) {
                    let value = if a.contains('=') {
                        ""
                    } else {
                        args.get(i + 1).map_or("", String::as_str)
                    };
                    self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!("{a} {value}").trim_end(),
                    );
                }
                if is_long_option(a, "--remove-files") {
                    self.found(index, FindingKind::DeleteFlag, a);
                }
                continue;
            }
            // `-I PROG`/`-F SCRIPT`, also inside clusters and old-style `tar xIf`.
            let cluster = a
                .strip_prefix('-')
                .or(if i == 0 { Some(a.as_str()) } else { None });
            if let Some(cluster) = cluster
                && (cluster.contains('I') || cluster.contains('F'))
                && cluster.chars().all(|c| c.is_ascii_alphanumeric())
            {
                let value = args.get(i + 1).map_or("", String::as_str);
                self.found(index, FindingKind::ExecFlag, format!("{a} {value}"));
            }
        }
    }

    fn rsync(&mut self, index: usize, args: &[String]) {
        for (i, a) in args.iter().enumerate() {
            if a.starts_with("--") {
                if is_long_option(a, "--rsh") || is_long_option(a, "--rsync-path") {
                    let value = if a.contains('=') {
                        ""
                    } else {
                        args.get(i + 1).map_or("", String::as_str)
                    };
                    self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!("{a} {value}").trim_end(),
                    );
                }
                if a.starts_with("--del")
                    || is_long_option(a, "--remove-source-files")
                    || is_long_option(a, "--remove-sent-files")
                {
                    self.found(index, FindingKind::DeleteFlag, a);
                }
            } else if a.starts_with('-') && a.contains('e') {
                let value = args.get(i + 1).map_or("", String::as_str);
                self.found(index, FindingKind::ExecFlag, format!("{a} {value}"));
            }
        }
    }

    fn ssh(&mut self, index: usize, program: &str, args: &[String]) {
        for (i, a) in args.iter().enumerate() {
            let lower = a.to_ascii_lowercase();
            if ["proxycommand", "localcommand", "knownhostscommand"]
                .iter()
                .any(|k| lower.contains(k))
            {
                self.found(index, FindingKind::ExecFlag, a);
            }
            if a.starts_with('-') && !a.starts_with("--") {
                let exec_letters: &[char] = match program {
                    "scp" => &['F', 'S'],
                    "sftp" => &['F', 'S', 'D'],
                    _ => &['F'],
                };
                if a.contains(exec_letters) {
                    let value = args.get(i + 1).map_or("", String::as_str);
                    self.found(
                        index,
                        FindingKind::ExecFlag,
                        format!("{a} {value} (a config file or program that can run commands)"),
                    );
                }
            }
        }
    }

    fn zip(&mut self, index: usize, args: &[String]) {
        for (i, a) in args.iter().enumerate() {
            if a.starts_with("-TT") || (a.starts_with("--") && is_long_option(a, "--unzip-command"))
            {
                let value = args.get(i + 1).map_or("", String::as_str);
                self.found(index, FindingKind::ExecFlag, format!("{a} {value}"));
            } else if (a.starts_with('-') && !a.starts_with("--") && a.contains('m'))
                || (a.starts_with("--") && is_long_option(a, "--move"))
            {
                self.found(index, FindingKind::DeleteFlag, a);
            }
        }
    }

    fn cargo(&mut self, index: usize, args: &[String]) {
        let sub_at = subcommand_index("cargo", args);
        for (i, a) in args[..sub_at].iter().enumerate() {
            if a == "--config" || a.starts_with("--config=") {
                let value = if a.contains('=') {
                    ""
                } else {
                    args.get(i + 1).map_or("", String::as_str)
                };
                self.found(
                    index,
                    FindingKind::ExecFlag,
                    format!("{a} {value}").trim_end(),
                );
            }
        }
        const COMPILES: &[&str] = &[
            "run", "r", "test", "t", "bench", "build", "b", "check", "c", "clippy", "install",
            "doc", "d", "rustc", "rustdoc", "fix", "publish", "package", "miri",
        ];
        if let Some(sub) = args.get(sub_at)
            && COMPILES.contains(&sub.as_str())
        {
            self.found(
                index,
                FindingKind::RunsProjectCode,
                format!(
                    "cargo {sub} (build scripts, proc macros{})",
                    if matches!(sub.as_str(), "run" | "r" | "test" | "t" | "bench") {
                        ", the program"
                    } else {
                        ""
                    }
                ),
            );
        }
    }

    fn node_package_manager(&mut self, index: usize, program: &str, args: &[String]) {
        let sub = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str);
        const NPM_RUNS: &[&str] = &[
            "run",
            "run-script",
            "rum",
            "urn",
            "exec",
            "x",
            "test",
            "tst",
            "t",
            "start",
            "stop",
            "restart",
            "install",
            "i",
            "in",
            "ins",
            "inst",
            "insta",
            "instal",
            "isnt",
            "isnta",
            "isntal",
            "add",
            "ci",
            "clean-install",
            "ic",
            "install-clean",
            "isntall-clean",
            "install-test",
            "it",
            "cit",
            "clean-install-test",
            "sit",
            "rebuild",
            "rb",
            "publish",
            "pack",
            "create",
            "init",
            "innit",
            "explore",
            "dlx",
            "update",
            "up",
            "upgrade",
        ];
        const MANAGER_BUILTINS_SAFE: &[&str] = &[
            "info",
            "list",
            "ls",
            "why",
            "outdated",
            "audit",
            "config",
            "help",
            "view",
            "licenses",
            "bin",
            "cache",
            "store",
            "whoami",
            "version",
            "--version",
            "-v",
            "owner",
            "search",
            "root",
            "prefix",
            "ping",
            "doctor",
            "fund",
            "docs",
            "repo",
            "bugs",
        ];
        let runs = match (program, sub) {
            (_, None) => program != "npm",
            ("npm", Some(s)) => NPM_RUNS.contains(&s),
            (_, Some(s)) => NPM_RUNS.contains(&s) || !MANAGER_BUILTINS_SAFE.contains(&s),
        };
        if runs {
            self.found(
                index,
                FindingKind::RunsProjectCode,
                argv_text(program, args),
            );
        }
    }

    fn go(&mut self, index: usize, args: &[String]) {
        let sub = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str);
        if matches!(sub, Some("run" | "test" | "generate" | "tool")) {
            self.found(index, FindingKind::RunsProjectCode, argv_text("go", args));
        }
        for a in args {
            if ["-toolexec", "--toolexec", "-exec", "--exec"]
                .iter()
                .any(|o| a == o || a.starts_with(&format!("{o}=")))
            {
                self.found(index, FindingKind::ExecFlag, a);
            }
        }
    }

    fn python_package_manager(&mut self, index: usize, program: &str, args: &[String]) {
        let words: Vec<&str> = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .map(String::as_str)
            .take(2)
            .collect();
        let runs = match (program, words.as_slice()) {
            ("pip", [s, ..]) => matches!(*s, "install" | "wheel" | "download"),
            ("uv", [s, ..]) => {
                matches!(*s, "run" | "sync" | "build" | "tool")
                    || matches!(words.as_slice(), ["pip", "install" | "sync"])
            }
            ("pipx", [s, ..]) => matches!(*s, "run" | "install"),
            ("poetry" | "pdm" | "hatch", [s, ..]) => {
                matches!(*s, "run" | "install" | "build" | "sync" | "shell" | "test")
            }
            _ => false,
        };
        if runs {
            self.found(
                index,
                FindingKind::RunsProjectCode,
                argv_text(program, args),
            );
        }
    }
}

#[derive(Default)]
struct SimpleCommand {
    words: Vec<Word>,
    /// Redirections that write a file, as written (`> out.txt`).
    writes: Vec<String>,
}

fn redirect_writes(redirect: Redirect, target: &str) -> bool {
    let writes = match redirect {
        Redirect::Output
        | Redirect::Append
        | Redirect::Clobber
        | Redirect::ReadWrite
        | Redirect::OutputBoth
        | Redirect::AppendBoth => true,
        // `>&2` duplicates a descriptor; `>&file` (bash) writes a file.
        Redirect::DupOutput => !(target == "-" || target.bytes().all(|b| b.is_ascii_digit())),
        Redirect::Input | Redirect::DupInput | Redirect::HereDoc | Redirect::HereString => false,
    };
    writes && !matches!(target, "/dev/null" | "/dev/stdout" | "/dev/stderr")
}

// ---------------------------------------------------------------------------
// Programs

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Why `written` does not name a program literally, if it does not.
fn check_program(written: &str) -> Result<(), &'static str> {
    if written.is_empty() {
        return Err("is empty (a program name is needed)");
    }
    // `.` is the shell's `source`.
    if written == "." {
        return Ok(());
    }
    let base = basename(written);
    if base.is_empty() || base == "." || base == ".." {
        return Err("names a directory, not a program");
    }
    // `[` is the test program; `[[` is a keyword.
    if written == "[" {
        return Ok(());
    }
    if written.contains(['*', '?', '[', ']']) {
        return Err("contains a wildcard (`*`, `?` or `[`): the program must be named literally");
    }
    if written.contains(['$', '`']) {
        return Err(
            "contains `$` or a backtick: the program must be named literally, no shell expands variables here",
        );
    }
    if written.contains(['{', '}']) {
        return Err("contains a brace: the program must be named literally");
    }
    if written.starts_with('=') {
        return Err("starts with `=`, which zsh expands to a path: name the program literally");
    }
    if written.starts_with('-') {
        return Err("starts with `-`: a program name cannot be an option");
    }
    Ok(())
}

/// A program named by a path that is not one of the system directories.
fn is_path_program(written: &str) -> bool {
    const SYSTEM_DIRS: &[&str] = &[
        "/usr/bin/",
        "/bin/",
        "/usr/sbin/",
        "/sbin/",
        "/usr/local/bin/",
        "/usr/local/sbin/",
    ];
    written.contains('/')
        && !SYSTEM_DIRS
            .iter()
            .any(|d| written.starts_with(d) && !written[d.len()..].contains('/'))
}

/// A POSIX-family shell, also versioned (`zsh-5.9`, `bash5.2`).
fn is_shell(program: &str) -> bool {
    SHELLS.iter().any(|base| is_versioned(program, base))
}

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "oksh", "lksh", "ash", "hush",
    "posh", "yash", "rbash",
];

/// Shell builtins that keep text to run as code later, or change what a name
/// runs. Refused inside scripts.
const SCRIPT_BUILTINS_REFUSED: &[&str] = &[
    "trap", "alias", "fc", "enable", "hash", "bind", "complete", "compgen", "emulate", "zmodload",
    "sched", "autoload", "zle", "let",
];

/// Programs that run code given to them.
const INTERPRETERS: &[&str] = &[
    "python",
    "python2",
    "python3",
    "pypy",
    "pypy3",
    "node",
    "nodejs",
    "deno",
    "bun",
    "perl",
    "ruby",
    "irb",
    "php",
    "lua",
    "luajit",
    "Rscript",
    "R",
    "julia",
    "tclsh",
    "wish",
    "expect",
    "osascript",
    "pwsh",
    "powershell",
    "fish",
    "csh",
    "tcsh",
    "nu",
    "xonsh",
    "elvish",
    "java",
    "jshell",
    "groovy",
    "kotlin",
    "scala",
    "guile",
    "racket",
    "sbcl",
    "clisp",
    "source",
    ".",
    "ipython",
    "jupyter",
    "dotnet",
    "swift",
    "ts-node",
    "tsx",
    "vite-node",
];

/// Interpreter names that come with a version suffix (`python3.11`, `perl5.36`).
const VERSIONED_INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "php", "lua", "node", "tclsh", "wish", "jshell",
];

fn is_interpreter(program: &str) -> bool {
    INTERPRETERS.contains(&program)
        || VERSIONED_INTERPRETERS
            .iter()
            .any(|base| is_versioned(program, base))
}

/// `program` is `base` or `base` with a version: `python3.11`, `zsh-5.9`.
fn is_versioned(program: &str, base: &str) -> bool {
    program.strip_prefix(base).is_some_and(|version| {
        let version = version.strip_prefix('-').unwrap_or(version);
        version.is_empty()
            || (version.starts_with(|c: char| c.is_ascii_digit())
                && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

/// Interactive programs that can start a shell or run commands.
const SHELL_ESCAPES: &[&str] = &[
    "less",
    "more",
    "most",
    "pg",
    "man",
    "vi",
    "vim",
    "nvim",
    "view",
    "vimdiff",
    "rvim",
    "ex",
    "emacs",
    "emacsclient",
    "nano",
    "pico",
    "ed",
    "red",
    "mg",
    "joe",
    "jed",
    "gdb",
    "lldb",
    "ftp",
    "psql",
    "mysql",
    "mariadb",
    "sqlite3",
    "tmux",
    "screen",
    "mc",
    "ranger",
    "nnn",
    "info",
];

/// Build and package tools that run code from the project or its dependencies.
const BUILD_TOOLS: &[&str] = &[
    "make",
    "gmake",
    "bmake",
    "just",
    "ninja",
    "cmake",
    "ctest",
    "meson",
    "scons",
    "rake",
    "gradle",
    "gradlew",
    "mvn",
    "mvnw",
    "ant",
    "sbt",
    "bazel",
    "bazelisk",
    "buck",
    "pytest",
    "py.test",
    "tox",
    "nox",
    "phpunit",
    "npx",
    "pnpx",
    "bunx",
    "uvx",
    "cargo-make",
    "task",
    "mage",
    "tsc-watch",
    "jest",
    "vitest",
    "mocha",
];

/// Programs that run commands given to them and are not unwrapped here.
const LAUNCHERS: &[&str] = &[
    "parallel",
    "sem",
    "systemd-run",
    "docker",
    "podman",
    "nerdctl",
    "kubectl",
    "lxc",
    "machinectl",
    "at",
    "batch",
    "entr",
    "hyperfine",
    "dbus-run-session",
    "xvfb-run",
    "firejail",
    "bwrap",
    "faketime",
    "torsocks",
    "proxychains",
    "proxychains4",
    "perf",
    "runcon",
    "run0",
    "chpst",
    "daemonize",
    "start-stop-daemon",
    "crontab",
    "ssh-agent",
    "nix-shell",
    "direnv",
    "toolbox",
    "distrobox",
    "schroot",
    "proot",
    "qemu-user",
];

/// Environment variables that make programs load or run other code.
fn env_runs_code(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "BASH_ENV",
        "ENV",
        "PS4",
        "PROMPT_COMMAND",
        "SHELLOPTS",
        "BASHOPTS",
        "IFS",
        "PAGER",
        "MANPAGER",
        "SYSTEMD_PAGER",
        "EDITOR",
        "VISUAL",
        "SUDO_EDITOR",
        "SUDO_ASKPASS",
        "SSH_ASKPASS",
        "LESSOPEN",
        "LESSCLOSE",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "PERL5DB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC",
        "RUSTDOC",
        "CARGO_HOME",
        "CC",
        "CXX",
        "SHELL",
        "BROWSER",
        "HOME",
        "XDG_CONFIG_HOME",
        "ZDOTDIR",
        "GCONV_PATH",
        "MAKEFLAGS",
        "TAR_OPTIONS",
        "GZIP",
        "ZSTD_CLEVEL",
        "LD_PRELOAD",
        "PKG_CONFIG_PATH",
    ];
    const SAFE_GIT: &[&str] = &[
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
        "GIT_TERMINAL_PROMPT",
        "GIT_TRACE",
        "GIT_FLUSH",
        "GIT_OPTIONAL_LOCKS",
        "GIT_ADVICE",
    ];
    NAMES.contains(&name)
        || [
            "LD_",
            "DYLD_",
            "BASH_FUNC_",
            "NPM_CONFIG_",
            "npm_config_",
            "CARGO_BUILD_",
            "CARGO_REGISTRIES_",
            "CARGO_REGISTRY_",
            "CARGO_CREDENTIAL_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        || name.ends_with("_RUNNER")
        || name.ends_with("_WRAPPER")
        || (name.starts_with("GIT_") && !SAFE_GIT.contains(&name))
}

/// `--name`, `--name=value`, or a getopt_long abbreviation of `full` (at least
/// two letters), since GNU tools accept any unambiguous prefix.
fn is_long_option(arg: &str, full: &str) -> bool {
    let Some(name) = arg.strip_prefix("--") else {
        return false;
    };
    let name = name.split('=').next().unwrap_or("");
    let full = full.trim_start_matches("--");
    name == full || (name.len() >= 2 && full.starts_with(name))
}

/// `--name` or `--name=value` exactly (for programs that take no abbreviations).
fn is_long_option_exact(arg: &str, full: &str) -> bool {
    arg == full
        || arg
            .strip_prefix(full)
            .is_some_and(|rest| rest.starts_with('='))
}

/// git's options before the subcommand, with their values, and the index of
/// the subcommand (or `args.len()`).
fn git_global_options(args: &[String]) -> (Vec<(String, Option<String>)>, usize) {
    const VALUED: &[&str] = &[
        "-C",
        "-c",
        "--git-dir",
        "--work-tree",
        "--namespace",
        "--config-env",
        "--super-prefix",
        "--attr-source",
    ];
    const FLAGS: &[&str] = &[
        "-p",
        "--paginate",
        "-P",
        "--no-pager",
        "--no-replace-objects",
        "--no-lazy-fetch",
        "--no-optional-locks",
        "--no-advice",
        "--bare",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--html-path",
        "--man-path",
        "--info-path",
    ];
    let mut found = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if VALUED.contains(&a) {
            found.push((a.to_string(), args.get(i + 1).cloned()));
            i += 2;
            continue;
        }
        if let Some((name, value)) = a.split_once('=')
            && (VALUED.contains(&name) || matches!(name, "--exec-path" | "--list-cmds"))
            && name.starts_with("--")
        {
            found.push((name.to_string(), Some(value.to_string())));
            i += 1;
            continue;
        }
        if FLAGS.contains(&a) || a == "--exec-path" {
            found.push((a.to_string(), None));
            i += 1;
            continue;
        }
        break;
    }
    (found, i)
}

/// Where the subcommand is, for programs with options before it.
fn subcommand_index(program: &str, args: &[String]) -> usize {
    match program {
        "git" => git_global_options(args).1,
        "cargo" => {
            let mut i = 0;
            if args.first().is_some_and(|a| a.starts_with('+')) {
                i = 1;
            }
            while let Some(a) = args.get(i) {
                match a.as_str() {
                    "--config" | "-Z" | "-C" | "--color" => i += 2,
                    "--locked" | "--offline" | "--frozen" | "-q" | "--quiet" | "-v" | "-vv"
                    | "--verbose" => i += 1,
                    s if s.starts_with("--config=")
                        || s.starts_with("--color=")
                        || (s.starts_with("-Z") && s.len() > 2) =>
                    {
                        i += 1;
                    }
                    _ => break,
                }
            }
            i
        }
        _ => 0,
    }
}

/// git configuration keys that cannot make git run anything. Anything not
/// listed is treated as exec-capable: the list of keys that run commands
/// (`core.pager`, `alias.*`, `core.fsmonitor`, `diff.*.textconv`, ...) keeps
/// growing, so the safe side is the known-harmless one.
fn git_key_is_safe(key: &str) -> bool {
    const SAFE: &[&str] = &[
        "core.quotepath",
        "core.autocrlf",
        "core.safecrlf",
        "core.filemode",
        "core.abbrev",
        "core.ignorecase",
        "core.longpaths",
        "core.eol",
        "core.whitespace",
        "core.symlinks",
        "core.precomposeunicode",
        "core.compression",
        "core.bigfilethreshold",
        "core.untrackedcache",
        "core.preloadindex",
        "core.commentchar",
        "core.commentstring",
        "init.defaultbranch",
        "protocol.version",
        "diff.noprefix",
        "diff.renames",
        "diff.algorithm",
        "diff.colormoved",
        "diff.mnemonicprefix",
        "diff.context",
        "diff.interhunkcontext",
        "merge.conflictstyle",
        "merge.ff",
        "merge.renames",
    ];
    const SAFE_PREFIXES: &[&str] = &[
        "user.",
        "color.",
        "advice.",
        "pull.",
        "push.",
        "log.",
        "format.",
        "status.",
        "commit.",
        "tag.",
        "gc.",
        "maintenance.",
        "fetch.",
        "i18n.",
        "blame.",
        "branch.",
        "rerere.",
        "http.",
        "pretty.",
        "column.",
        "grep.",
        "checkout.",
        "clean.",
        "index.",
        "pack.",
        "feature.",
        "rebase.",
        "am.",
    ];
    let key = key.to_ascii_lowercase();
    // A subsection (`branch.<name>.x`) is free text: only look at section and name.
    let dangerous_suffix = [
        ".textconv",
        ".command",
        ".driver",
        ".cmd",
        ".helper",
        ".path",
        ".program",
    ]
    .iter()
    .any(|s| key.ends_with(s));
    !dangerous_suffix
        && (SAFE.contains(&key.as_str()) || SAFE_PREFIXES.iter().any(|p| key.starts_with(p)))
}

// ---------------------------------------------------------------------------
// Wrappers

/// A wrapper's getopt-style options.
#[derive(Debug, Clone, Copy, Default)]
struct OptSpec {
    /// Options without a value (`-i`, `--null`).
    flags: &'static [&'static str],
    /// Options with a value, separate or attached (`-n 5`, `-n5`, `--adjustment=5`).
    valued: &'static [&'static str],
    /// Options whose value can only be attached (`-i{}`, `--preserve-env=LIST`).
    optional: &'static [&'static str],
    /// Options after which no command runs (`command -v`, `sudo -l`).
    stop: &'static [&'static str],
    /// Options that make the inner command impossible to know (`env -S`).
    refused: &'static [&'static str],
    /// `nice -5`: a short option made of digits.
    numeric: bool,
    /// valgrind: every `--name[=value]` is an option with no separate value.
    any_long: bool,
    /// Options may follow operands (GNU permutation, as in `su USER -c CMD`).
    permute: bool,
}

#[derive(Debug, Clone, Copy)]
enum WrapperKind {
    /// The command is the operands after `operands_before` of them.
    Argv {
        operands_before: usize,
    },
    /// `env`/`sudo`: `NAME=value` operands, then the command. `any_equals`:
    /// env takes any word with `=`; sudo not one starting with `=`.
    Assignments {
        any_equals: bool,
    },
    Xargs,
    /// `busybox APPLET ARGS`.
    Applet,
    /// `su`/`runuser`: runs the user's shell (`-c CMD`, or ARGS given to it).
    UserShell,
    /// `sg GROUP COMMAND`.
    ShellCommandOperand,
    Flock,
    Watch,
    /// `script -c CMD`.
    ScriptCommand,
    Eval,
}

fn wrapper_spec(program: &str) -> Option<(OptSpec, WrapperKind)> {
    use WrapperKind::*;
    let argv = Argv { operands_before: 0 };
    let none = OptSpec::default();
    let spec = match program {
        "nohup" | "builtin" | "noglob" | "nocorrect" | "catchsegv" => (none, argv),
        "env" => (
            OptSpec {
                flags: &[
                    "-",
                    "-i",
                    "--ignore-environment",
                    "-0",
                    "--null",
                    "-v",
                    "--debug",
                    "--list-signal-handling",
                ],
                valued: &["-u", "--unset", "-C", "--chdir"],
                optional: &["--block-signal", "--default-signal", "--ignore-signal"],
                stop: &["--help", "--version"],
                refused: &["-S", "--split-string"],
                ..none
            },
            Assignments { any_equals: true },
        ),
        "nice" => (
            OptSpec {
                valued: &["-n", "--adjustment"],
                stop: &["--help", "--version"],
                numeric: true,
                ..none
            },
            argv,
        ),
        "ionice" => (
            OptSpec {
                flags: &["-t", "--ignore"],
                valued: &[
                    "-c",
                    "--class",
                    "-n",
                    "--classdata",
                    "-p",
                    "--pid",
                    "-P",
                    "--pgid",
                    "-u",
                    "--uid",
                ],
                stop: &[
                    "-p",
                    "--pid",
                    "-P",
                    "--pgid",
                    "-u",
                    "--uid",
                    "-h",
                    "--help",
                    "-V",
                    "--version",
                ],
                ..none
            },
            argv,
        ),
        "timeout" => (
            OptSpec {
                flags: &["--preserve-status", "--foreground", "-v", "--verbose"],
                valued: &["-k", "--kill-after", "-s", "--signal"],
                stop: &["--help", "--version"],
                ..none
            },
            Argv { operands_before: 1 },
        ),
        "stdbuf" => (
            OptSpec {
                valued: &["-i", "--input", "-o", "--output", "-e", "--error"],
                stop: &["--help", "--version"],
                ..none
            },
            argv,
        ),
        "setsid" => (
            OptSpec {
                flags: &["-c", "--ctty", "-f", "--fork", "-w", "--wait"],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "command" => (
            OptSpec {
                flags: &["-p"],
                stop: &["-v", "-V"],
                ..none
            },
            argv,
        ),
        "exec" => (
            OptSpec {
                flags: &["-c", "-l"],
                valued: &["-a"],
                ..none
            },
            argv,
        ),
        "time" => (
            OptSpec {
                flags: &[
                    "-p",
                    "--portability",
                    "-v",
                    "--verbose",
                    "-a",
                    "--append",
                    "-q",
                    "--quiet",
                ],
                valued: &["-f", "--format", "-o", "--output"],
                stop: &["--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "xargs" => (
            OptSpec {
                flags: &[
                    "-0",
                    "--null",
                    "-r",
                    "--no-run-if-empty",
                    "-t",
                    "--verbose",
                    "-p",
                    "--interactive",
                    "-x",
                    "--exit",
                    "-o",
                    "--open-tty",
                ],
                valued: &[
                    "-a",
                    "--arg-file",
                    "-d",
                    "--delimiter",
                    "-E",
                    "-I",
                    "-L",
                    "-n",
                    "--max-args",
                    "-P",
                    "--max-procs",
                    "-s",
                    "--max-chars",
                    "--process-slot-var",
                ],
                optional: &["-e", "--eof", "-i", "--replace", "-l", "--max-lines"],
                stop: &["--help", "--version", "--show-limits"],
                ..none
            },
            Xargs,
        ),
        "sudo" | "sudo-rs" => (
            OptSpec {
                flags: &[
                    "-A",
                    "--askpass",
                    "-b",
                    "--background",
                    "-B",
                    "--bell",
                    "-E",
                    "-H",
                    "--set-home",
                    "-i",
                    "--login",
                    "-k",
                    "--reset-timestamp",
                    "-N",
                    "--no-update",
                    "-n",
                    "--non-interactive",
                    "-P",
                    "--preserve-groups",
                    "-S",
                    "--stdin",
                    "-s",
                    "--shell",
                ],
                valued: &[
                    "-C",
                    "--close-from",
                    "-D",
                    "--chdir",
                    "-g",
                    "--group",
                    "-p",
                    "--prompt",
                    "-R",
                    "--chroot",
                    "-r",
                    "--role",
                    "-t",
                    "--type",
                    "-T",
                    "--command-timeout",
                    "-U",
                    "--other-user",
                    "-u",
                    "--user",
                    "--host",
                ],
                optional: &["--preserve-env"],
                stop: &[
                    "-e",
                    "--edit",
                    "-h",
                    "--help",
                    "-K",
                    "--remove-timestamp",
                    "-l",
                    "--list",
                    "-V",
                    "--version",
                    "-v",
                    "--validate",
                ],
                ..none
            },
            Assignments { any_equals: false },
        ),
        "doas" => (
            OptSpec {
                flags: &["-n"],
                valued: &["-u", "-C"],
                stop: &["-s", "-L", "-C"],
                ..none
            },
            argv,
        ),
        "pkexec" => (
            OptSpec {
                flags: &["--disable-internal-agent", "--keep-cwd"],
                valued: &["--user"],
                stop: &["--help", "--version"],
                ..none
            },
            argv,
        ),
        "su" | "runuser" => (
            OptSpec {
                flags: &[
                    "-",
                    "-l",
                    "--login",
                    "-m",
                    "-p",
                    "--preserve-environment",
                    "-f",
                    "--fast",
                    "-P",
                    "--pty",
                ],
                valued: &[
                    "-c",
                    "--command",
                    "--session-command",
                    "-s",
                    "--shell",
                    "-g",
                    "--group",
                    "-G",
                    "--supp-group",
                    "-w",
                    "--whitelist-environment",
                    "-u",
                    "--user",
                ],
                stop: &["-h", "--help", "-V", "--version"],
                permute: true,
                ..none
            },
            UserShell,
        ),
        "sg" => (none, ShellCommandOperand),
        "chroot" => (
            OptSpec {
                flags: &["--skip-chdir"],
                valued: &["--userspec", "--groups"],
                stop: &["--help", "--version"],
                ..none
            },
            Argv { operands_before: 1 },
        ),
        "chrt" => (
            OptSpec {
                flags: &[
                    "-a",
                    "--all-tasks",
                    "-b",
                    "--batch",
                    "-d",
                    "--deadline",
                    "-e",
                    "--ext",
                    "-f",
                    "--fifo",
                    "-i",
                    "--idle",
                    "-o",
                    "--other",
                    "-r",
                    "--rr",
                    "-R",
                    "--reset-on-fork",
                    "-v",
                    "--verbose",
                ],
                valued: &[
                    "-T",
                    "--sched-runtime",
                    "-P",
                    "--sched-period",
                    "-D",
                    "--sched-deadline",
                ],
                stop: &[
                    "-p",
                    "--pid",
                    "-m",
                    "--max",
                    "-h",
                    "--help",
                    "-V",
                    "--version",
                ],
                ..none
            },
            Argv { operands_before: 1 },
        ),
        "taskset" => (
            OptSpec {
                flags: &["-a", "--all-tasks", "-c", "--cpu-list"],
                stop: &["-p", "--pid", "-h", "--help", "-V", "--version"],
                ..none
            },
            Argv { operands_before: 1 },
        ),
        "flock" => (
            OptSpec {
                flags: &[
                    "-s",
                    "--shared",
                    "-x",
                    "-e",
                    "--exclusive",
                    "-u",
                    "--unlock",
                    "-n",
                    "--nb",
                    "--nonblock",
                    "-o",
                    "--close",
                    "-F",
                    "--no-fork",
                    "--verbose",
                ],
                valued: &["-w", "--wait", "--timeout", "-E", "--conflict-exit-code"],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            Flock,
        ),
        "unshare" => (
            OptSpec {
                flags: &[
                    "-m",
                    "-u",
                    "-i",
                    "-n",
                    "-p",
                    "-U",
                    "-C",
                    "-T",
                    "-f",
                    "--fork",
                    "-r",
                    "--map-root-user",
                    "-c",
                    "--map-current-user",
                    "--map-auto",
                ],
                valued: &[
                    "--propagation",
                    "--setgroups",
                    "-R",
                    "--root",
                    "-w",
                    "--wd",
                    "-S",
                    "--setuid",
                    "-G",
                    "--setgid",
                    "--map-user",
                    "--map-group",
                    "--map-users",
                    "--map-groups",
                    "--monotonic",
                    "--boottime",
                ],
                optional: &[
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--net",
                    "--pid",
                    "--user",
                    "--cgroup",
                    "--time",
                    "--mount-proc",
                    "--kill-child",
                ],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "nsenter" => (
            OptSpec {
                flags: &[
                    "-a",
                    "--all",
                    "-F",
                    "--no-fork",
                    "--preserve-credentials",
                    "-Z",
                    "--follow-context",
                ],
                valued: &["-t", "--target", "-S", "--setuid", "-G", "--setgid"],
                optional: &[
                    "-m", "--mount", "-u", "--uts", "-i", "--ipc", "-n", "--net", "-p", "--pid",
                    "-U", "--user", "-C", "--cgroup", "-T", "--time", "-r", "--root", "-w", "--wd",
                ],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "strace" => (
            OptSpec {
                flags: &[
                    "-A",
                    "-c",
                    "-C",
                    "-d",
                    "-D",
                    "-f",
                    "-F",
                    "-i",
                    "-k",
                    "-n",
                    "-q",
                    "-r",
                    "-t",
                    "-T",
                    "-v",
                    "-w",
                    "-x",
                    "-y",
                    "-z",
                    "-Z",
                    "--follow-forks",
                    "--output-separately",
                    "--summary-only",
                    "--summary",
                    "--no-abbrev",
                    "--instruction-pointer",
                    "--stack-trace",
                    "--successful-only",
                    "--failed-only",
                    "--seccomp-bpf",
                    "--kill-on-exit",
                ],
                valued: &[
                    "-a",
                    "-b",
                    "-e",
                    "-E",
                    "-I",
                    "-o",
                    "-O",
                    "-p",
                    "-P",
                    "-s",
                    "-S",
                    "-u",
                    "-X",
                    "-U",
                    "--trace",
                    "--signal",
                    "--status",
                    "--abbrev",
                    "--verbose",
                    "--raw",
                    "--read",
                    "--write",
                    "--fault",
                    "--inject",
                    "--output",
                    "--attach",
                    "--env",
                    "--user",
                    "--string-limit",
                    "--columns",
                    "--summary-columns",
                    "--summary-sort-by",
                    "--trace-path",
                    "--const-print-style",
                ],
                optional: &[
                    "--decode-fds",
                    "--quiet",
                    "--relative-timestamps",
                    "--syscall-times",
                    "--absolute-timestamps",
                    "--timestamps",
                    "--daemonize",
                ],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "ltrace" => (
            OptSpec {
                flags: &[
                    "-b",
                    "-c",
                    "-C",
                    "-d",
                    "-f",
                    "-i",
                    "-L",
                    "-r",
                    "-S",
                    "-t",
                    "-T",
                    "--demangle",
                    "--no-signals",
                ],
                valued: &[
                    "-a",
                    "-A",
                    "-D",
                    "-e",
                    "-F",
                    "-l",
                    "-n",
                    "-o",
                    "-p",
                    "-s",
                    "-u",
                    "-x",
                    "-w",
                    "--align",
                    "--output",
                    "--library",
                    "--indent",
                ],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "valgrind" => (
            OptSpec {
                flags: &["-v", "-q"],
                stop: &["-h", "--help", "--version"],
                any_long: true,
                ..none
            },
            argv,
        ),
        "fakeroot" => (
            OptSpec {
                flags: &["-u", "--unknown-is-real"],
                valued: &["-l", "--lib", "--faked", "-s", "-i", "-b"],
                stop: &["-h", "--help", "-v", "--version"],
                ..none
            },
            argv,
        ),
        "prlimit" => (
            OptSpec {
                flags: &["--noheadings", "--raw", "--verbose"],
                valued: &["-o", "--output", "-p", "--pid"],
                optional: &[
                    "-c",
                    "--core",
                    "-d",
                    "--data",
                    "-e",
                    "--nice",
                    "-f",
                    "--fsize",
                    "-i",
                    "--sigpending",
                    "-l",
                    "--memlock",
                    "-m",
                    "--rss",
                    "-n",
                    "--nofile",
                    "-q",
                    "--msgqueue",
                    "-r",
                    "--rtprio",
                    "-s",
                    "--stack",
                    "-t",
                    "--cpu",
                    "-u",
                    "--nproc",
                    "-v",
                    "--as",
                    "-x",
                    "--locks",
                    "-y",
                    "--rttime",
                ],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "setpriv" => (
            OptSpec {
                flags: &[
                    "--clear-groups",
                    "--keep-groups",
                    "--init-groups",
                    "--nnp",
                    "--no-new-privs",
                    "--reset-env",
                ],
                valued: &[
                    "--reuid",
                    "--regid",
                    "--ruid",
                    "--euid",
                    "--rgid",
                    "--egid",
                    "--groups",
                    "--inh-caps",
                    "--ambient-caps",
                    "--bounding-set",
                    "--securebits",
                    "--pdeathsig",
                    "--selinux-label",
                    "--apparmor-profile",
                    "--landlock-access",
                    "--landlock-rule",
                ],
                stop: &["-d", "--dump", "-h", "--help", "-V", "--version"],
                ..none
            },
            argv,
        ),
        "watch" => (
            OptSpec {
                flags: &[
                    "-b",
                    "--beep",
                    "-c",
                    "--color",
                    "-C",
                    "--no-color",
                    "-e",
                    "--errexit",
                    "-g",
                    "--chgexit",
                    "-p",
                    "--precise",
                    "-t",
                    "--no-title",
                    "-w",
                    "--no-wrap",
                    "-x",
                    "--exec",
                    "-r",
                    "--no-rerun",
                    "-f",
                    "--follow",
                ],
                valued: &["-n", "--interval", "-q", "--equexit"],
                optional: &["-d", "--differences"],
                stop: &["-h", "--help", "-v", "--version"],
                ..none
            },
            Watch,
        ),
        "script" => (
            OptSpec {
                flags: &[
                    "-a", "--append", "-e", "--return", "-f", "--flush", "--force", "-q", "--quiet",
                ],
                valued: &[
                    "-c",
                    "--command",
                    "-E",
                    "--echo",
                    "-I",
                    "--log-in",
                    "-O",
                    "--log-out",
                    "-B",
                    "--log-io",
                    "-T",
                    "--log-timing",
                    "-m",
                    "--logging-format",
                ],
                optional: &["-t", "--timing"],
                stop: &["-h", "--help", "-V", "--version"],
                ..none
            },
            ScriptCommand,
        ),
        "busybox" | "toybox" => (none, Applet),
        "eval" => (none, Eval),
        _ => return None,
    };
    Some(spec)
}

struct ParsedOptions {
    /// Options seen, in order, with their values.
    found: Vec<(String, Option<String>)>,
    operands: Vec<String>,
    stop: bool,
}

/// Parse options as getopt would, so that no word is mistaken for the
/// command. Unknown options are errors: an option we do not know might take
/// a value, and then the next word would not be the command.
fn parse_options(args: &[String], spec: &OptSpec) -> Result<ParsedOptions, String> {
    let mut parsed = ParsedOptions {
        found: Vec::new(),
        operands: Vec::new(),
        stop: false,
    };
    let unknown = |o: &str| format!("the option `{o}` is not understood");
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            parsed.operands.extend(args[i + 1..].iter().cloned());
            return Ok(parsed);
        }
        if a == "-" && spec.flags.contains(&"-") {
            parsed.found.push((a.to_string(), None));
            i += 1;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                None => (a.to_string(), None),
            };
            let name_str = name.as_str();
            if spec.refused.contains(&name_str) {
                return Err(format!(
                    "the option `{name}` builds a command line of its own"
                ));
            }
            if spec.stop.contains(&name_str) {
                parsed.stop = true;
            }
            if spec.valued.contains(&name_str) {
                let value = match value {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("the option `{name}` needs a value"))?
                    }
                };
                parsed.found.push((name, Some(value)));
            } else if spec.optional.contains(&name_str) || spec.any_long {
                parsed.found.push((name, value));
            } else if spec.flags.contains(&name_str) || spec.stop.contains(&name_str) {
                if value.is_some() {
                    return Err(format!("the option `{name}` takes no value"));
                }
                parsed.found.push((name, None));
            } else {
                return Err(unknown(&name));
            }
            i += 1;
            continue;
        }
        if a.starts_with('-') && a.len() > 1 {
            let body = &a[1..];
            if spec.numeric && body.bytes().all(|b| b.is_ascii_digit()) {
                parsed.found.push(("-N".into(), Some(body.to_string())));
                i += 1;
                continue;
            }
            for (k, ch) in body.char_indices() {
                let option = format!("-{ch}");
                let o = option.as_str();
                let rest = &body[k + ch.len_utf8()..];
                if spec.refused.contains(&o) {
                    return Err(format!("the option `{o}` builds a command line of its own"));
                }
                if spec.stop.contains(&o) {
                    parsed.stop = true;
                }
                if spec.valued.contains(&o) {
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("the option `{o}` needs a value"))?
                    } else {
                        rest.to_string()
                    };
                    parsed.found.push((option, Some(value)));
                    break;
                }
                if spec.optional.contains(&o) {
                    let value = (!rest.is_empty()).then(|| rest.to_string());
                    parsed.found.push((option, value));
                    break;
                }
                if spec.flags.contains(&o) || spec.stop.contains(&o) {
                    parsed.found.push((option, None));
                    continue;
                }
                return Err(unknown(o));
            }
            i += 1;
            continue;
        }
        if spec.permute {
            parsed.operands.push(a.to_string());
            i += 1;
            continue;
        }
        parsed.operands.extend(args[i..].iter().cloned());
        return Ok(parsed);
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// awk and sed programs

/// What an awk program can do beyond reading and printing: `system()`, pipes
/// to and from commands, `print > file`, and `@` directives (`@load`,
/// `@include`, indirect calls). String and regex literals are skipped, so
/// `/a|b/` is not a pipe.
fn awk_capabilities(program: &str) -> Vec<(FindingKind, String)> {
    let mut found = Vec::new();
    let chars: Vec<char> = program.chars().collect();
    let evidence = || truncate(program);
    // The previous significant character, to tell a regex `/` from division.
    let mut prev: Option<char> = None;
    let mut prev2: Option<char> = None;
    let mut in_print = false;
    let mut paren_depth = 0usize;
    let mut i = 0;
    let note = |kind: FindingKind, found: &mut Vec<(FindingKind, String)>| {
        if !found.iter().any(|(k, _)| *k == kind) {
            found.push((kind, evidence()));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            '/' if awk_regex_can_start(prev, prev2) => {
                i += 1;
                let mut in_bracket = false;
                while i < chars.len() && (in_bracket || chars[i] != '/') {
                    match chars[i] {
                        '\\' => i += 1,
                        '[' => in_bracket = true,
                        ']' => in_bracket = false,
                        '\n' => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '|' => {
                if chars.get(i + 1) == Some(&'|') {
                    i += 1;
                } else {
                    note(FindingKind::ExecFlag, &mut found);
                }
            }
            '@' => note(FindingKind::ExecFlag, &mut found),
            '(' => paren_depth += 1,
            ')' => paren_depth = paren_depth.saturating_sub(1),
            ';' | '}' | '{' | '\n' => {
                in_print = false;
                paren_depth = 0;
            }
            '>' if in_print && paren_depth == 0 => note(FindingKind::WriteFlag, &mut found),
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i + 1 < chars.len() && (chars[i + 1].is_alphanumeric() || chars[i + 1] == '_')
                {
                    i += 1;
                }
                let ident: String = chars[start..=i].iter().collect();
                if ident == "print" || ident == "printf" {
                    in_print = true;
                    paren_depth = 0;
                }
                if ident == "system" {
                    let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                    if next == Some(&'(') {
                        note(FindingKind::ExecFlag, &mut found);
                    }
                }
            }
            _ => {}
        }
        if !c.is_whitespace() {
            prev2 = prev;
            prev = chars.get(i).copied().or(Some(c));
        }
        i += 1;
    }
    found
}

/// Whether a `/` after `prev` starts a regex literal rather than dividing:
/// after an operand (a name, number, `)`, `]`, string, or postfix `++`/`--`)
/// it divides.
fn awk_regex_can_start(prev: Option<char>, prev2: Option<char>) -> bool {
    let after_operand = matches!(prev, Some(p) if p.is_alphanumeric() || matches!(p, '_' | ')' | ']' | '$' | '"' | '.'));
    let after_postfix = matches!(prev, Some('+' | '-')) && prev2 == prev;
    !after_operand && !after_postfix
}

/// What a sed script can do beyond editing text: the `e` command and `s///e`
/// run commands, `w`/`W` and `s///w` write files. A script that cannot be
/// parsed is reported as exec-capable (fail safe).
fn sed_capabilities(script: &str) -> Vec<(FindingKind, String)> {
    // GNU sed reads `[...]` as a bracket expression (checked with sed 4.9:
    // `s/[/]/X/` replaces a slash), so that reading decides what parses.
    let mut found = parse_sed(script, true).unwrap_or_else(|()| {
        vec![(
            FindingKind::ExecFlag,
            format!(
                "sed script not understood, may use `e` or `w`: {}",
                truncate(script)
            ),
        )]
    });
    // Whatever the plain reading sees is reported too, in case a sed differs.
    for cap in parse_sed(script, false).unwrap_or_default() {
        if !found.contains(&cap) {
            found.push(cap);
        }
    }
    found
}

fn parse_sed(script: &str, brackets: bool) -> Result<Vec<(FindingKind, String)>, ()> {
    let c: Vec<char> = script.chars().collect();
    let mut caps = Vec::new();
    let mut i = 0;
    let to_eol = |i: &mut usize| -> String {
        let start = *i;
        while *i < c.len() && c[*i] != '\n' {
            *i += 1;
        }
        c[start..*i].iter().collect::<String>().trim().to_string()
    };
    // Skip a delimited part starting after the delimiter; returns past the closing one.
    let delimited = |i: &mut usize, delim: char, regex: bool| -> Result<(), ()> {
        let mut in_bracket = false;
        loop {
            let Some(&ch) = c.get(*i) else {
                return Err(());
            };
            *i += 1;
            if in_bracket {
                if ch == ']' {
                    in_bracket = false;
                }
                continue;
            }
            match ch {
                '\\' => {
                    if *i >= c.len() {
                        return Err(());
                    }
                    *i += 1;
                }
                '[' if regex && brackets && delim != '[' => {
                    // `[]...]` and `[^]...]`: a leading `]` is literal.
                    if c.get(*i) == Some(&'^') {
                        *i += 1;
                    }
                    if c.get(*i) == Some(&']') {
                        *i += 1;
                    }
                    in_bracket = true;
                }
                '\n' if regex => return Err(()),
                ch if ch == delim => return Ok(()),
                _ => {}
            }
        }
    };
    let skip_blanks = |i: &mut usize| {
        while *i < c.len() && (c[*i] == ' ' || c[*i] == '\t') {
            *i += 1;
        }
    };
    loop {
        while i < c.len() && (c[i].is_whitespace() || c[i] == ';') {
            i += 1;
        }
        if i >= c.len() {
            return Ok(caps);
        }
        // Addresses: N, $, /re/, \cREc, first~step, addr,+N, addr,~N; then `I`/`M` and `!`.
        for part in 0..2 {
            skip_blanks(&mut i);
            match c.get(i) {
                Some(d) if d.is_ascii_digit() => {
                    while c.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '~') {
                        i += 1;
                    }
                }
                Some('+' | '~') if part == 1 => {
                    i += 1;
                    while c.get(i).is_some_and(char::is_ascii_digit) {
                        i += 1;
                    }
                }
                Some('$') => i += 1,
                Some('/') => {
                    i += 1;
                    delimited(&mut i, '/', true)?;
                    while matches!(c.get(i), Some('I' | 'M')) {
                        i += 1;
                    }
                }
                Some('\\') => {
                    let delim = *c.get(i + 1).ok_or(())?;
                    i += 2;
                    delimited(&mut i, delim, true)?;
                    while matches!(c.get(i), Some('I' | 'M')) {
                        i += 1;
                    }
                }
                _ => {}
            }
            skip_blanks(&mut i);
            if part == 0 && c.get(i) == Some(&',') {
                i += 1;
            } else {
                break;
            }
        }
        skip_blanks(&mut i);
        while c.get(i) == Some(&'!') {
            i += 1;
            skip_blanks(&mut i);
        }
        let Some(&cmd) = c.get(i) else {
            return Err(());
        };
        i += 1;
        match cmd {
            '{' | '}' | '=' | 'd' | 'D' | 'g' | 'G' | 'h' | 'H' | 'n' | 'N' | 'p' | 'P' | 'x'
            | 'z' | 'F' => {}
            'l' | 'L' | 'q' | 'Q' => {
                skip_blanks(&mut i);
                while c.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
            }
            '#' | 'r' | 'R' => {
                to_eol(&mut i);
            }
            'a' | 'i' | 'c' => {
                // Text to the end of the line; a backslash continues it.
                while i < c.len() && c[i] != '\n' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            'w' | 'W' => {
                let file = to_eol(&mut i);
                if !matches!(file.as_str(), "/dev/stdout" | "/dev/stderr") {
                    caps.push((FindingKind::WriteFlag, format!("{cmd} {file}")));
                }
            }
            'e' => {
                let command = to_eol(&mut i);
                caps.push((
                    FindingKind::ExecFlag,
                    format!("e {command}").trim_end().to_string(),
                ));
            }
            'b' | 't' | 'T' | ':' | 'v' => {
                while i < c.len() && c[i] != '\n' && c[i] != ';' {
                    i += 1;
                }
            }
            's' | 'y' => {
                let delim = *c.get(i).ok_or(())?;
                if delim == '\n' || delim == '\\' {
                    return Err(());
                }
                i += 1;
                delimited(&mut i, delim, cmd == 's')?;
                delimited(&mut i, delim, false)?;
                if cmd == 's' {
                    loop {
                        match c.get(i) {
                            Some('g' | 'p' | 'i' | 'I' | 'm' | 'M') => i += 1,
                            Some(d) if d.is_ascii_digit() => i += 1,
                            Some('e') => {
                                caps.push((FindingKind::ExecFlag, "s///e".to_string()));
                                i += 1;
                            }
                            Some('w') => {
                                i += 1;
                                let file = to_eol(&mut i);
                                if !matches!(file.as_str(), "/dev/stdout" | "/dev/stderr") {
                                    caps.push((FindingKind::WriteFlag, format!("s///w {file}")));
                                }
                                break;
                            }
                            None | Some(';' | '\n' | '}' | ' ' | '\t' | '#') => break,
                            Some(_) => return Err(()),
                        }
                    }
                }
            }
            _ => return Err(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Command patterns

/// A command rule's pattern: a prefix such as `["git", "push"]`, optionally
/// with `args_any`, tokens any of which anywhere in the arguments makes it
/// match (e.g. `["-exec", "-execdir", "-delete"]`).
///
/// Token forms in `args_any`:
/// - `--flag` matches `--flag`, `--flag=value`, and getopt_long abbreviations
///   of at least two letters (`--to-com` for `--to-command`), because GNU tools
///   accept any unambiguous prefix;
/// - a token ending in `(` (`system(`) matches when an argument contains it,
///   also with blanks before the `(` (for awk programs);
/// - a token ending in `*` (`-fprint*`) matches arguments starting with the rest;
/// - anything else must equal an argument.
///
/// Short-option clusters are not split (`-xI` does not match `-I`); the
/// findings table handles the clusters that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    program: String,
    words: Vec<String>,
    args_any: Vec<ArgToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ArgToken {
    Exact(String),
    LongOption(String),
    Call(String),
    Prefix(String),
}

impl ArgToken {
    fn matches(&self, arg: &str) -> bool {
        match self {
            ArgToken::Exact(t) => arg == t,
            ArgToken::LongOption(t) => is_long_option(arg, t),
            ArgToken::Prefix(p) => arg.starts_with(p.as_str()),
            ArgToken::Call(name) => arg
                .match_indices(name.as_str())
                .any(|(at, _)| arg[at + name.len()..].trim_start().starts_with('(')),
        }
    }
}

impl CommandPattern {
    pub fn new(prefix: Vec<String>, args_any: Vec<String>) -> Result<Self, String> {
        let mut words = prefix.into_iter();
        let program = words
            .next()
            .ok_or_else(|| "a command pattern needs at least a program".to_string())?;
        let program = basename(&program).to_string();
        if program.is_empty() {
            return Err("the program of a command pattern is empty".into());
        }
        let words: Vec<String> = words.collect();
        if words.iter().any(String::is_empty) {
            return Err("a command pattern has an empty word".into());
        }
        let args_any = args_any
            .into_iter()
            .map(|t| {
                if let Some(name) = t.strip_suffix('(') {
                    if name.is_empty() {
                        return Err(format!("args_any token `{t}` names no function"));
                    }
                    Ok(ArgToken::Call(name.to_string()))
                } else if let Some(prefix) = t.strip_suffix('*') {
                    if prefix.is_empty() {
                        return Err("args_any token `*` would match every argument".into());
                    }
                    Ok(ArgToken::Prefix(prefix.to_string()))
                } else if t.starts_with("--") && t.len() > 2 && !t.contains('=') {
                    Ok(ArgToken::LongOption(t))
                } else if t.is_empty() {
                    Err("an args_any token is empty".into())
                } else {
                    Ok(ArgToken::Exact(t))
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            program,
            words,
            args_any,
        })
    }

    /// True when `inv` matches: its program equals the pattern's (both as
    /// basenames), the following prefix words equal the next argv words, and
    /// (when `args_any` is given) one of its tokens matches an argument. For
    /// `git`, global options before the subcommand (`-C dir`, `-c k=v`,
    /// `--git-dir=..`, `--work-tree=..`, `--no-pager`, `-P`, `--bare`,
    /// `--namespace=..`, ...) are skipped, so `git -c a=b push` matches
    /// `["git", "push"]`; for `cargo`, `+toolchain` and its global options are.
    pub fn matches(&self, inv: &Invocation) -> bool {
        if inv.argv.first().map(|p| basename(p)) != Some(self.program.as_str()) {
            return false;
        }
        let args = &inv.argv[1..];
        let start = if self.words.is_empty() {
            0
        } else {
            subcommand_index(&self.program, args)
        };
        let prefix_matches = args
            .get(start..start + self.words.len())
            .is_some_and(|w| w == self.words.as_slice());
        prefix_matches
            && (self.args_any.is_empty()
                || args
                    .iter()
                    .any(|a| self.args_any.iter().any(|t| t.matches(a))))
    }

    /// The first invocation of `line` that matches.
    pub fn find_in<'l>(&self, line: &'l CommandLine) -> Option<&'l Invocation> {
        line.invocations.iter().find(|inv| self.matches(inv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: ShellOptions = ShellOptions {
        allow_shell_syntax: false,
    };
    const LENIENT: ShellOptions = ShellOptions {
        allow_shell_syntax: true,
    };

    fn ok(cmd: &str) -> CommandLine {
        analyze(cmd, &STRICT).unwrap_or_else(|e| panic!("{cmd:?} was refused: {e}"))
    }

    fn ok_lenient(cmd: &str) -> CommandLine {
        analyze(cmd, &LENIENT).unwrap_or_else(|e| panic!("{cmd:?} was refused: {e}"))
    }

    fn refused(cmd: &str) -> CommandRefusal {
        match analyze(cmd, &STRICT) {
            Ok(line) => panic!("{cmd:?} was accepted: {line:?}"),
            Err(e) => e,
        }
    }

    fn refused_lenient(cmd: &str) -> CommandRefusal {
        match analyze(cmd, &LENIENT) {
            Ok(line) => panic!("{cmd:?} was accepted: {line:?}"),
            Err(e) => e,
        }
    }

    fn rule(cmd: &str) -> &'static str {
        refused(cmd).rule_id()
    }

    fn programs(line: &CommandLine) -> Vec<&str> {
        line.invocations.iter().map(Invocation::program).collect()
    }

    fn runs(cmd: &str, program: &str) -> bool {
        programs(&ok(cmd)).contains(&program)
    }

    fn has(line: &CommandLine, program: &str, kind: FindingKind) -> bool {
        line.findings
            .iter()
            .any(|f| f.program == program && f.what == kind)
    }

    fn finds(cmd: &str, program: &str, kind: FindingKind) -> bool {
        has(&ok(cmd), program, kind)
    }

    fn pattern(prefix: &[&str], args_any: &[&str]) -> CommandPattern {
        CommandPattern::new(
            prefix.iter().map(|s| s.to_string()).collect(),
            args_any.iter().map(|s| s.to_string()).collect(),
        )
        .expect("valid pattern")
    }

    fn first_match(p: &CommandPattern, cmd: &str) -> bool {
        p.matches(&ok(cmd).invocations[0])
    }

    // --- Splitting and quoting tricks -------------------------------------

    #[test]
    fn plain_command_is_one_invocation() {
        let line = ok("git status --short");
        assert_eq!(line.argv, ["git", "status", "--short"]);
        assert!(line.env.is_empty());
        assert_eq!(line.invocations.len(), 1);
        assert_eq!(line.invocations[0].argv, ["git", "status", "--short"]);
        assert_eq!(line.invocations[0].program_as_written, "git");
        assert!(line.invocations[0].via.is_empty());
        assert!(line.findings.is_empty());
    }

    #[test]
    fn quoting_inside_the_program_name_does_not_hide_it() {
        for cmd in [
            "\"sudo\" id",
            "s\\udo id",
            "'s'udo id",
            "su''do id",
            "\"su\"'do' id",
            "\\s\\u\\d\\o id",
        ] {
            let line = ok(cmd);
            assert_eq!(line.invocations[0].argv, ["sudo", "id"], "{cmd}");
        }
    }

    #[test]
    fn absolute_and_relative_paths_normalize_to_the_basename() {
        let line = ok("/usr/sbin/iptables -L");
        assert_eq!(line.invocations[0].argv, ["iptables", "-L"]);
        assert_eq!(line.invocations[0].program_as_written, "/usr/sbin/iptables");
        assert_eq!(line.argv[0], "/usr/sbin/iptables");
        assert!(
            line.findings.is_empty(),
            "system directories are not flagged"
        );
        assert_eq!(
            ok("/usr/bin/../bin/sudo id").invocations[0].program(),
            "sudo"
        );
        let line = ok("./sudo id");
        assert_eq!(line.invocations[0].program(), "sudo");
        assert!(has(&line, "sudo", FindingKind::PathProgram));
        assert!(finds("/tmp/x/ls", "ls", FindingKind::PathProgram));
    }

    #[test]
    fn leading_assignments_become_the_environment() {
        let line = ok("VAR=x FOO='a b' sudo id");
        assert_eq!(line.argv, ["sudo", "id"]);
        assert_eq!(
            line.env,
            [
                ("VAR".to_string(), "x".to_string()),
                ("FOO".into(), "a b".into())
            ]
        );
        assert_eq!(line.invocations[0].program(), "sudo");
        assert!(line.findings.is_empty(), "VAR and FOO are harmless");
    }

    #[test]
    fn a_quoted_name_is_not_an_assignment() {
        // A shell runs a program called `VAR=x` here; so do we.
        let line = ok("'VAR'=x id");
        assert!(line.env.is_empty());
        assert_eq!(line.invocations[0].program(), "VAR=x");
        assert!(ok("1A=x id").env.is_empty());
    }

    #[test]
    fn assignments_that_load_code_are_findings() {
        for cmd in [
            "LD_PRELOAD=/tmp/x.so ls",
            "PATH=. ls",
            "GIT_SSH_COMMAND='sh -c id' git fetch",
            "BASH_ENV=/tmp/x bash -c ls",
            "NODE_OPTIONS=--require=/tmp/x.js node app.js",
            "RUSTC_WRAPPER=/tmp/w cargo build",
        ] {
            let line = ok(cmd);
            assert!(
                line.findings
                    .iter()
                    .any(|f| f.what == FindingKind::ExecEnv && f.invocation == 0),
                "{cmd}: {:?}",
                line.findings
            );
        }
        assert!(!finds(
            "GIT_AUTHOR_NAME=me git commit -m x",
            "git",
            FindingKind::ExecEnv
        ));
        assert!(finds(
            "env 'BASH_FUNC_ls%%=() { id; }' ls",
            "env",
            FindingKind::ExecEnv
        ));
    }

    #[test]
    fn shell_characters_inside_single_quotes_are_literal() {
        assert_eq!(ok("grep 'a|b' file").argv, ["grep", "a|b", "file"]);
        assert_eq!(ok("echo \"a;b\"").argv, ["echo", "a;b"]);
        assert_eq!(
            ok("echo 'a && b; $(x) `y` > z'").argv,
            ["echo", "a && b; $(x) `y` > z"]
        );
        assert_eq!(ok("echo \"it's\"").argv, ["echo", "it's"]);
        assert_eq!(ok("echo 'say \"hi\"'").argv, ["echo", "say \"hi\""]);
    }

    #[test]
    fn backslashes_in_double_quotes_follow_shell_rules() {
        assert_eq!(
            ok(r#"echo "a\"b" "c\\d" "e\f""#).argv,
            ["echo", "a\"b", "c\\d", "e\\f"]
        );
        assert_eq!(ok(r#"echo "\$HOME""#).argv, ["echo", "$HOME"]);
        assert_eq!(ok("echo a\\ b").argv, ["echo", "a b"]);
        assert_eq!(ok("echo a\\\nb").argv, ["echo", "ab"], "line continuation");
    }

    #[test]
    fn quoted_newlines_are_text_and_surrounding_blanks_are_ignored() {
        assert_eq!(
            ok("git commit -m \"line one\nline two\"").argv,
            ["git", "commit", "-m", "line one\nline two"]
        );
        assert_eq!(ok("  \n ls -la \n").argv, ["ls", "-la"]);
        assert_eq!(ok("echo '' x").argv, ["echo", "", "x"]);
    }

    #[test]
    fn a_dollar_that_no_shell_would_expand_is_literal() {
        assert_eq!(ok("sed \"s/a$/b/\" f").argv, ["sed", "s/a$/b/", "f"]);
        assert_eq!(ok("echo $ \"cost $\"").argv, ["echo", "$", "cost $"]);
        assert_eq!(ok("grep 'x$' f").argv, ["grep", "x$", "f"]);
    }

    #[test]
    fn globs_and_tildes_are_literal_arguments() {
        assert_eq!(ok("ls *.rs").argv, ["ls", "*.rs"]);
        assert_eq!(ok("find . -name *.rs").argv, ["find", ".", "-name", "*.rs"]);
        assert_eq!(ok("echo a?b [x] ~/y").argv, ["echo", "a?b", "[x]", "~/y"]);
        assert_eq!(
            ok("find . ! -name x").argv,
            ["find", ".", "!", "-name", "x"]
        );
        assert_eq!(
            ok("git log HEAD@{1} @{u}").argv,
            ["git", "log", "HEAD@{1}", "@{u}"]
        );
        assert_eq!(ok("echo a#b").argv, ["echo", "a#b"]);
    }

    // --- SHELL-001 ---------------------------------------------------------

    #[test]
    fn command_separators_and_lists_are_refused() {
        for cmd in [
            "ls; sudo id",
            "ls ;sudo id",
            "ls && sudo id",
            "ls || sudo id",
            "ls & sudo id",
            "ls\nsudo id",
            "ls | sudo tee x",
            "ls |& cat",
        ] {
            assert_eq!(rule(cmd), "SHELL-001", "{cmd}");
        }
    }

    #[test]
    fn substitutions_and_expansions_are_refused_even_in_double_quotes() {
        for cmd in [
            "echo $(id)",
            "echo \"$(id)\"",
            "echo `id`",
            "echo \"`id`\"",
            "echo $HOME",
            "echo \"$HOME\"",
            "echo ${HOME}",
            "echo $((1+2))",
            "echo $'\\x73udo'",
            "echo $1",
            "echo $?",
            "ls <(sudo id)",
            "diff >(sudo id) x",
        ] {
            assert_eq!(rule(cmd), "SHELL-001", "{cmd}");
        }
    }

    #[test]
    fn redirections_are_refused() {
        for cmd in [
            "ls > out",
            "ls >> out",
            "sort < in",
            "cargo test 2>&1",
            "ls &> out",
            "cat <<EOF",
            "cat <<< word",
            "ls 2> /dev/null",
        ] {
            assert_eq!(rule(cmd), "SHELL-001", "{cmd}");
        }
    }

    #[test]
    fn subshells_groups_comments_keywords_and_history_are_refused() {
        for cmd in [
            "(sudo id)",
            "{ sudo id; }",
            "{ sudo id }",
            "if true",
            "! sudo id",
            "[[ -f x ]]",
            "ls # comment",
            "echo !!",
            "echo !-1",
            "sudo !foo",
            "{s,}udo id",
            "echo {1..3}",
            "PATH+=:/tmp ls",
        ] {
            assert_eq!(rule(cmd), "SHELL-001", "{cmd}");
        }
    }

    #[test]
    fn a_quoted_keyword_is_refused_like_a_plain_one() {
        // Found by `quotes_inside_the_program_name_change_nothing`.
        assert_eq!(rule("do"), "SHELL-001");
        assert_eq!(rule("''do"), "SHELL-001");
        assert_eq!(rule("'if' true"), "SHELL-001");
        assert_eq!(refused_lenient("sh -c \"'if' true\"").rule_id(), "CMD-002");
    }

    #[test]
    fn shell_syntax_message_says_what_and_where() {
        let e = refused("cargo build && cargo test");
        let message = e.to_string();
        assert!(message.contains("`&&`"), "{message}");
        assert!(message.contains("column 13"), "{message}");
        assert!(message.contains("the command"), "{message}");
        assert_eq!(
            e.advice(),
            "send one command at a time, without shell syntax (no pipes, redirections, `;`, `&&`, `$VAR` or `$(...)`); put characters meant literally in single quotes"
        );
        let message = refused("echo \"$(id)\"").to_string();
        assert!(message.contains("command substitution"), "{message}");
        let message = refused("echo $HOME").to_string();
        assert!(message.contains("`$HOME`"), "{message}");
    }

    // --- SHELL-002 ---------------------------------------------------------

    #[test]
    fn unbalanced_quotes_and_empty_commands_are_unsplittable() {
        for cmd in ["echo 'abc", "echo \"abc", "echo abc\\", "", "   ", " \n\t "] {
            assert_eq!(rule(cmd), "SHELL-002", "{cmd:?}");
        }
        let message = refused("echo 'abc").to_string();
        assert!(message.contains("column 6"), "{message}");
        assert!(message.contains("never closed"), "{message}");
    }

    #[test]
    fn control_and_bidi_characters_are_unsplittable() {
        for cmd in [
            "ls\0x",
            "sudo\r id",
            "ls \u{1b}[2J",
            "ls \u{202e}cod",
            "echo \u{7f}",
        ] {
            assert_eq!(rule(cmd), "SHELL-002", "{cmd:?}");
        }
        // In quotes too: they only serve to make text look different.
        assert_eq!(rule("echo 'a\u{202e}b'"), "SHELL-002");
    }

    // --- CMD-001 -----------------------------------------------------------

    #[test]
    fn globs_and_expansions_in_the_program_are_refused() {
        for cmd in [
            "/usr/bin/su* id",
            "s?do id",
            "[s]udo id",
            "\"su*\" id",
            "'$X' id",
            "'{a,b}' id",
            "=sudo id",
            "-rf /",
        ] {
            assert_eq!(rule(cmd), "CMD-001", "{cmd}");
        }
        let message = refused("/usr/bin/su* id").to_string();
        assert!(
            message.contains("/usr/bin/su*") && message.contains("wildcard"),
            "{message}"
        );
    }

    #[test]
    fn empty_or_directory_programs_are_refused() {
        for cmd in [
            "'' id", "\"\"", "sudo/ id", "./ id", ".. x", "VAR=1", "A=1 B=2",
        ] {
            assert_eq!(rule(cmd), "CMD-001", "{cmd}");
        }
    }

    #[test]
    fn the_test_program_bracket_is_allowed() {
        assert_eq!(ok("[ -f x ]").invocations[0].program(), "[");
    }

    // --- CMD-002 -----------------------------------------------------------

    #[test]
    fn wrappers_with_unknown_options_are_refused() {
        for cmd in [
            "env -S 'sudo id'",
            "env -iS'sudo id'",
            "env --split-string='sudo id'",
            "env --sp='sudo id'",
            "xargs --frobnicate sudo",
            "nice --bogus sudo id",
            "timeout --bogus 5 sudo id",
            "sudo --bogus id",
            "stdbuf -x sudo id",
            "busybox",
            "busybox --install",
            "sh -c",
            "bash -c --bogus",
            "bash --bogus -c id",
            "strace --unknown-long x sudo id",
            "nice -n",
        ] {
            assert_eq!(rule(cmd), "CMD-002", "{cmd}");
        }
        let message = refused("env -S 'sudo id'").to_string();
        assert!(
            message.contains("`env`") && message.contains("-S"),
            "{message}"
        );
    }

    #[test]
    fn wrappers_whose_command_is_read_from_input_are_exec_capable() {
        for (cmd, wrapper) in [
            ("xargs sudo", "sudo"),
            ("xargs env", "env"),
            ("xargs env A=1", "env"),
            ("xargs nice", "nice"),
            ("xargs timeout 5", "timeout"),
            ("xargs bash", "bash"),
            ("xargs eval echo", "eval"),
            ("xargs su", "su"),
            ("xargs watch", "watch"),
            ("xargs xargs", "xargs"),
            ("xargs nice sudo", "sudo"),
            ("xargs flock f", "flock"),
            ("xargs busybox", "busybox"),
        ] {
            let line = ok(cmd);
            let index = line
                .invocations
                .iter()
                .rposition(|i| i.program() == wrapper)
                .unwrap_or_else(|| panic!("{cmd}: no {wrapper}"));
            assert!(
                line.findings_for(index)
                    .any(|f| f.what == FindingKind::ExecFlag
                        && f.evidence.contains("read from input")),
                "{cmd}: {:?}",
                line.findings
            );
        }
        // A wrapper with a command of its own just gets more arguments.
        let line = ok("xargs nice -n 5 rm");
        assert!(!has(&line, "nice", FindingKind::ExecFlag));
        assert!(has(&line, "rm", FindingKind::InputArguments));
    }

    #[test]
    fn commands_filled_in_at_run_time_are_refused() {
        for cmd in [
            "xargs -I{} {} id",
            "xargs -I % sh -c 'echo %'",
            "xargs -i sh -c 'cat {}'",
            "find . -exec {} \\;",
            "find . -exec sh -c 'cat {}' \\;",
            "find . -exec eval {} \\;",
        ] {
            assert_eq!(rule(cmd), "CMD-002", "{cmd}");
        }
    }

    #[test]
    fn big_inputs_stay_fast() {
        let started = std::time::Instant::now();
        let braces = format!("echo {}", "{".repeat(200_000));
        assert!(analyze(&braces, &STRICT).is_ok());
        let args: String = (0..50_000).map(|i| format!(" --del{i}")).collect();
        assert!(finds(
            &format!("rsync{args}"),
            "rsync",
            FindingKind::DeleteFlag
        ));
        let quoted = format!("sh -c 'echo {}'", "a\\".repeat(100_000));
        let _ = analyze(&quoted, &STRICT);
        let awk = format!("awk '{}'", "/a|b/ ".repeat(50_000));
        assert!(ok(&awk).findings.is_empty());
        let sed = format!("sed '{}'", "s/a/b/;".repeat(50_000));
        assert!(ok(&sed).findings.is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn nesting_has_a_limit() {
        let deep = format!("{}sudo id", "env ".repeat(MAX_DEPTH + 2));
        assert_eq!(rule(&deep), "CMD-002");
        let fine = format!("{}sudo id", "env ".repeat(MAX_DEPTH - 2));
        assert!(runs(&fine, "sudo"));
    }

    // --- Wrappers ----------------------------------------------------------

    #[test]
    fn wrappers_from_the_brief_all_reveal_sudo() {
        for cmd in [
            "env -i FOO=1 sudo id",
            "nice -n 5 sudo id",
            "timeout -s KILL 5 sudo id",
            "nohup sudo id",
            "xargs -0 sudo",
            "busybox sh -c 'sudo id'",
            "/usr/bin/env sudo id",
            "command sudo id",
            "exec sudo id",
        ] {
            assert!(runs(cmd, "sudo"), "{cmd}: {:?}", programs(&ok(cmd)));
        }
    }

    #[test]
    fn more_wrappers_reveal_their_inner_command() {
        for cmd in [
            "env sudo id",
            "env - PATH=/bin sudo id",
            "env -u HOME -C /tmp sudo id",
            "env -- sudo id",
            "nice -5 sudo id",
            "nice -n5 sudo id",
            "nice --adjustment=5 sudo id",
            "ionice -c 3 -n 7 sudo id",
            "timeout 5 sudo id",
            "timeout --kill-after=1 -v 5s sudo id",
            "stdbuf -oL -e0 sudo id",
            "setsid -fw sudo id",
            "command -p sudo id",
            "exec -a name sudo id",
            "time sudo id",
            "time -p sudo id",
            "builtin exec sudo id",
            "noglob sudo id",
            "xargs -n 1 -P 4 sudo",
            "xargs -a list.txt --null sudo",
            "doas -u root sudo id",
            "pkexec --user root sudo id",
            "chroot / sudo id",
            "chroot --userspec=1:1 / sudo id",
            "chrt -b 0 sudo id",
            "taskset 0x1 sudo id",
            "unshare -r --mount sudo id",
            "nsenter -t 1 -m -u sudo id",
            "strace -f -o /tmp/t sudo id",
            "strace -ff -e trace=execve sudo id",
            "ltrace -o x sudo id",
            "valgrind --tool=none -q sudo id",
            "fakeroot -- sudo id",
            "prlimit --nofile=10 sudo id",
            "setpriv --reuid=1 sudo id",
            "flock /tmp/l sudo id",
            "flock -n /tmp/l -c 'sudo id'",
            "watch -n 1 sudo id",
            "watch -x sudo id",
            "script -q -c 'sudo id' /dev/null",
            "sg wheel 'sudo id'",
            "sg wheel -c 'sudo id'",
            "su -c 'sudo id'",
            "su - root -c 'sudo id'",
            "su root -c 'sudo id'",
            "su -s /bin/bash -c 'sudo id' root",
            "runuser -u nobody -- sudo id",
            "eval 'sudo id'",
            "eval sudo id",
            "toybox env sudo id",
            "catchsegv sudo id",
        ] {
            assert!(runs(cmd, "sudo"), "{cmd}: {:?}", programs(&ok(cmd)));
        }
    }

    #[test]
    fn sudo_stays_an_invocation_and_is_unwrapped() {
        let line = ok("sudo -u root -E FOO=1 id -u");
        assert_eq!(programs(&line), ["sudo", "id"]);
        assert_eq!(line.invocations[1].argv, ["id", "-u"]);
        assert_eq!(line.invocations[1].via, ["sudo"]);
        let line = ok("doas id");
        assert_eq!(programs(&line), ["doas", "id"]);
    }

    #[test]
    fn invocations_list_every_wrapper_they_are_inside() {
        let line = ok("bash -lc \"sudo id\"");
        assert_eq!(programs(&line), ["bash", "sudo", "id"]);
        assert_eq!(line.invocations[1].argv, ["sudo", "id"]);
        assert_eq!(line.invocations[1].via, ["bash"]);
        assert_eq!(line.invocations[2].via, ["bash", "sudo"]);

        let line = ok("timeout 5 nice -n 1 env A=1 /usr/bin/python3 x.py");
        assert_eq!(programs(&line), ["timeout", "nice", "env", "python3"]);
        assert_eq!(line.invocations[3].via, ["timeout", "nice", "env"]);
        assert_eq!(line.invocations[3].program_as_written, "/usr/bin/python3");
        assert!(has(&line, "python3", FindingKind::Interpreter));
    }

    #[test]
    fn wrappers_that_run_nothing_have_no_inner_invocation() {
        for (cmd, only) in [
            ("command -v sudo", "command"),
            ("sudo -l id", "sudo"),
            ("sudo -e /etc/hosts", "sudo"),
            ("env", "env"),
            ("env FOO=1", "env"),
            ("nice", "nice"),
            ("timeout 5", "timeout"),
            ("ionice -p 1", "ionice"),
            ("taskset -p 1", "taskset"),
        ] {
            assert_eq!(programs(&ok(cmd)), [only], "{cmd}");
        }
    }

    #[test]
    fn xargs_runs_echo_by_default_with_arguments_from_input() {
        let line = ok("xargs");
        assert_eq!(programs(&line), ["xargs", "echo"]);
        assert!(has(&line, "xargs", FindingKind::ExecFlag));
        assert!(has(&line, "echo", FindingKind::InputArguments));
        let line = ok("xargs -0 rm -f");
        assert_eq!(programs(&line), ["xargs", "rm"]);
        assert_eq!(line.invocations[1].via, ["xargs"]);
        assert!(has(&line, "rm", FindingKind::InputArguments));
        let line = ok("xargs -I{} cp {} /tmp");
        assert!(has(&line, "cp", FindingKind::InputArguments));
    }

    // --- Scripts given to a shell ------------------------------------------

    #[test]
    fn shell_scripts_are_analysed_with_the_same_rules() {
        let e = refused("sh -c 'a; b'");
        assert_eq!(e.rule_id(), "SHELL-001");
        assert!(e.to_string().contains("the script given to `sh -c`"), "{e}");
        assert_eq!(rule("bash -c 'ls | sudo tee x'"), "SHELL-001");
        assert_eq!(rule("bash -c 'echo $HOME'"), "SHELL-001");
        assert_eq!(rule("bash -c 'ls *.rs'"), "SHELL-001");
        assert_eq!(rule("bash -c '{s,}udo id'"), "SHELL-001");
        assert_eq!(rule("sudo bash -c 'a && b'"), "SHELL-001");
        assert_eq!(rule("bash -c 's*do id'"), "CMD-001");
        assert!(runs("bash -c 'sudo id' name arg", "sudo"));
        assert!(runs("zsh -fc 'sudo id'", "sudo"));
        assert!(runs("bash -o pipefail -c 'sudo id'", "sudo"));
        assert!(runs("dash -e -c 'sudo id'", "sudo"));
        assert!(runs("sh -c 'sudo   id'", "id"));
        assert!(runs("sh -c \"bash -c 'sudo id'\"", "sudo"));
    }

    #[test]
    fn scripts_refuse_text_bash_would_evaluate_later() {
        for cmd in [
            "bash -c \"echo '\\$(id)'\"",
            "bash -c \"test -v 'a[\\$(id)]'\"",
            "sh -c 'trap \"sudo id\" EXIT'",
            "sh -c 'alias x=sudo'",
            "bash -c 'enable -f x.so y'",
            "bash -c 'let x=1'",
            "bash -c \"PS4='\\$(id)' ls\"",
        ] {
            assert_eq!(rule(cmd), "CMD-002", "{cmd}");
        }
    }

    #[test]
    fn a_shell_running_a_file_or_stdin_is_an_interpreter() {
        let line = ok("sh script.sh");
        assert_eq!(programs(&line), ["sh"]);
        assert!(has(&line, "sh", FindingKind::Interpreter));
        assert!(finds("bash", "bash", FindingKind::Interpreter));
        assert!(finds("bash -s arg", "bash", FindingKind::Interpreter));
        assert!(finds(
            "bash --rcfile x -i",
            "bash",
            FindingKind::Interpreter
        ));
        assert!(finds("su", "sh", FindingKind::Interpreter));
    }

    #[test]
    fn lenient_scripts_analyse_each_plain_command() {
        let line = ok_lenient("bash -c 'cargo build && cargo test 2>&1 | tee out.txt; ! sudo id'");
        assert_eq!(
            programs(&line),
            ["bash", "cargo", "cargo", "tee", "sudo", "id"]
        );
        assert_eq!(line.invocations[4].via, ["bash"]);
        assert!(
            !has(&line, "cargo", FindingKind::WriteFlag),
            "2>&1 writes no file"
        );
        let line = ok_lenient("bash -c 'echo hi > out.txt; ls >/dev/null # x; sudo id'");
        assert_eq!(programs(&line), ["bash", "echo", "ls"]);
        assert!(has(&line, "echo", FindingKind::WriteFlag));
        assert!(!has(&line, "ls", FindingKind::WriteFlag));
        let line = ok_lenient("bash -c 'x=1; PATH=/tmp ls'");
        assert!(has(&line, "ls", FindingKind::ExecEnv));
        let line = ok_lenient("bash -c 'export PATH=/tmp'");
        assert!(has(&line, "export", FindingKind::ExecEnv));
    }

    #[test]
    fn lenient_scripts_refuse_what_depends_on_run_time_values() {
        for cmd in [
            "bash -c 'echo $HOME'",
            "bash -c 'echo $(id)'",
            "bash -c 'ls *.rs'",
            "bash -c '(sudo id)'",
            "bash -c 'if true; then sudo id; fi'",
            "bash -c 'cat <<EOF'",
            "bash -c 'cat <(id)'",
            "bash -c 'echo >'",
            "bash -c 'echo > *.txt'",
            "bash -c 'trap x EXIT'",
        ] {
            assert_eq!(refused_lenient(cmd).rule_id(), "CMD-002", "{cmd}");
        }
    }

    #[test]
    fn lenient_top_level_passes_shell_characters_literally() {
        let line = ok_lenient("echo a && sudo id; $(x) > y");
        assert_eq!(
            line.argv,
            ["echo", "a", "&&", "sudo", "id;", "$(x)", ">", "y"]
        );
        assert_eq!(
            programs(&line),
            ["echo"],
            "nothing else runs without a shell"
        );
        assert_eq!(
            ok_lenient("echo 'a b' \"c d\"").argv,
            ["echo", "a b", "c d"]
        );
        assert_eq!(ok_lenient("echo a\nb").argv, ["echo", "a", "b"]);
        assert_eq!(refused_lenient("$X id").rule_id(), "CMD-001");
        assert_eq!(refused_lenient("{s,}udo id").rule_id(), "CMD-001");
        assert_eq!(refused_lenient("echo 'x").rule_id(), "SHELL-002");
        assert_eq!(ok_lenient("A+=1 id").invocations[0].program(), "A+=1");
    }

    // --- Findings ----------------------------------------------------------

    #[test]
    fn find_flags_that_run_write_or_delete() {
        for flag in ["-exec", "-execdir", "-ok", "-okdir"] {
            let line = ok(&format!("find . {flag} rm {{}} \\;"));
            assert!(has(&line, "find", FindingKind::ExecFlag), "{flag}");
            assert_eq!(programs(&line), ["find", "rm"], "{flag}");
            assert_eq!(line.invocations[1].via, ["find"]);
            assert!(has(&line, "rm", FindingKind::InputArguments));
        }
        assert!(finds(
            "find . -name x -delete",
            "find",
            FindingKind::DeleteFlag
        ));
        for flag in ["-fprint", "-fprint0", "-fprintf", "-fls"] {
            assert!(finds(
                &format!("find . {flag} out"),
                "find",
                FindingKind::WriteFlag
            ));
        }
        assert!(ok("find . -name '*.rs' -type f").findings.is_empty());
        let line = ok("find . -exec sudo id {} + -print");
        assert_eq!(line.invocations[1].argv, ["sudo", "id", "{}"]);
        assert!(runs("find . -exec sh -c 'sudo id' \\;", "sudo"));
    }

    #[test]
    fn git_global_options_that_run_commands() {
        for cmd in [
            "git -c core.pager=sh log",
            "git -c Core.Pager=sh log",
            "git -c 'alias.x=!sh' x",
            "git -c core.fsmonitor=x status",
            "git -c diff.x.textconv=sh diff",
            "git --config-env=core.pager=X log",
            "git --config-env core.pager=X log",
            "git --exec-path=/tmp log",
        ] {
            assert!(finds(cmd, "git", FindingKind::ExecFlag), "{cmd}");
        }
        for cmd in [
            "git -c user.name=me -c user.email=a@b.c commit -m x",
            "git -c color.ui=always log",
            "git -C sub --no-pager log",
            "git --exec-path",
            "git -c branch.x.remote=origin status",
        ] {
            assert!(ok(cmd).findings.is_empty(), "{cmd}");
        }
    }

    #[test]
    fn git_subcommand_options_that_run_commands() {
        for cmd in [
            "git diff --ext-diff",
            "git log --ext",
            "git fetch --upload-pack=x origin",
            "git push --receive-pack x origin",
            "git clone -u x url",
            "git ls-remote -u x url",
            "git clone --template=/tmp/t url",
            "git clone -c core.pager=sh url",
            "git clone --config=core.pager=sh url",
            "git clone ext::sh url",
            "git rebase -x make main",
            "git rebase --exec make main",
            "git grep -Ovim foo",
            "git grep --open-files-in-pager foo",
            "git difftool -x meld",
            "git submodule foreach ls",
            "git filter-branch --tree-filter x",
            "git send-email --sendmail-cmd=x a.patch",
            "git bisect run make test",
            "git config core.pager less",
            "git config --global core.sshCommand x",
            "git config alias.x '!sh'",
            "git config set core.editor vim",
            "git config --local --add filter.x.clean cmd",
        ] {
            assert!(finds(cmd, "git", FindingKind::ExecFlag), "{cmd}");
        }
        for cmd in [
            "git push -u origin main",
            "git fetch -u origin",
            "git commit --template=msg.txt",
            "git config user.name me",
            "git config user.email a@b.c",
            "git config --get core.pager",
            "git config --unset core.pager",
            "git config get core.pager",
            "git log --exclude=x --oneline",
        ] {
            assert!(ok(cmd).findings.is_empty(), "{cmd}: {:?}", ok(cmd).findings);
        }
        assert!(finds("git config --edit", "git", FindingKind::ShellEscape));
        assert!(runs("git bisect run sudo id", "sudo"));
    }

    #[test]
    fn rg_pre_runs_a_preprocessor() {
        assert!(finds("rg --pre ./x foo", "rg", FindingKind::ExecFlag));
        assert!(finds("rg --pre=./x foo", "rg", FindingKind::ExecFlag));
        assert!(ok("rg --pre-glob '*.gz' foo").findings.is_empty());
        assert!(ok("rg -n foo src").findings.is_empty());
    }

    #[test]
    fn tar_options_that_run_or_delete() {
        for cmd in [
            "tar --checkpoint-action=exec=sh -cf a.tar x",
            "tar --to-command=sh -xf a.tar",
            "tar --to-com=sh -xf a.tar",
            "tar --use-compress-program sh -xf a.tar",
            "tar -I zstd -xf a.tar",
            "tar -xIzstd -f a.tar",
            "tar xIf zstd a.tar",
            "tar -F ./next -cf a.tar x",
            "tar --info-script=x -cf a.tar x",
            "tar --new-volume-script=x -cf a.tar x",
            "tar --rsh-command=x -cf h:a.tar x",
        ] {
            assert!(finds(cmd, "tar", FindingKind::ExecFlag), "{cmd}");
        }
        assert!(finds(
            "tar --remove-files -cf a.tar x",
            "tar",
            FindingKind::DeleteFlag
        ));
        assert!(ok("tar -xzf a.tgz -C out").findings.is_empty());
        assert!(ok("tar czf a.tgz src").findings.is_empty());
    }

    #[test]
    fn awk_programs_that_run_or_write() {
        for cmd in [
            "awk '{system(\"id\")}'",
            "awk 'BEGIN { system (\"id\") }'",
            "awk '{print | \"sh\"}'",
            "awk 'BEGIN{\"id\" | getline x; print x}'",
            "gawk '@load \"x\"; {}'",
            "gawk -l filefuncs '{}'",
            "mawk -f prog.awk data",
            "awk -F: -v x=1 -f prog.awk data",
            "nawk -e '{system(\"id\")}'",
            "awk -- '{system(\"id\")}'",
            "awk '{ x++ /1| \"sh\" }'",
        ] {
            let line = ok(cmd);
            let program = line.invocations[0].program().to_string();
            assert!(
                has(&line, &program, FindingKind::ExecFlag),
                "{cmd}: {:?}",
                line.findings
            );
        }
        assert!(finds(
            "awk '{print > \"out\"}' f",
            "awk",
            FindingKind::WriteFlag
        ));
        assert!(finds(
            "awk '{printf \"%s\", $1 >> \"out\"}' f",
            "awk",
            FindingKind::WriteFlag
        ));
        for cmd in [
            "awk '/a|b/' f",
            "awk -F'|' '{print $1}' f",
            "awk '$1 > 5 {print}' f",
            "awk '{ if ($1 > 5) print $2 }' f",
            "awk '{print ($1 > 5)}' f",
            "awk 'a || b' f",
            "awk '{print \"system(x) | y\"}' f",
            "awk '{ n = $1 / 2; print n }' f",
        ] {
            assert!(ok(cmd).findings.is_empty(), "{cmd}: {:?}", ok(cmd).findings);
        }
    }

    #[test]
    fn sed_scripts_that_run_or_write() {
        for cmd in [
            "sed 's/a/b/e' f",
            "sed '1e id' f",
            "sed -n 'e id' f",
            "sed -e 's/x/y/' -e '1e id' f",
            "sed -ne '1e id' f",
            "sed --expression='$e id' f",
            "sed '/x/{e id\n}' f",
            "sed -f script.sed f",
            "sed 's/a/b/;!' f",
            "sed 's/[/]/x/e' f",
        ] {
            assert!(
                finds(cmd, "sed", FindingKind::ExecFlag),
                "{cmd}: {:?}",
                ok(cmd).findings
            );
        }
        for cmd in [
            "sed 's/a/b/w out' f",
            "sed 'w out' f",
            "sed -n '/x/W out' f",
        ] {
            assert!(finds(cmd, "sed", FindingKind::WriteFlag), "{cmd}");
        }
        for cmd in [
            "sed 's/a/b/g' f",
            "sed -i 's/foo/bar/' f",
            "sed -i.bak -E 's/(a|b)/x/2' f",
            "sed -n 's/[/]/x/p' f",
            "sed 'y/abc/xyz/' f",
            "sed '/x/{p;d}' f",
            "sed '$!N;s/\\n/ /' f",
            "sed '1~2d;3,+2p;/a/I,/b/!d' f",
            "sed 'a\\\nappended' f",
            "sed -n '/start/,/end/{/end/!p}' f",
            "sed 's/a/b/w /dev/stdout' f",
            "sed --sandbox 's/a/b/e' f",
        ] {
            assert!(ok(cmd).findings.is_empty(), "{cmd}: {:?}", ok(cmd).findings);
        }
    }

    #[test]
    fn rsync_ssh_and_zip_exec_and_delete_options() {
        for cmd in [
            "rsync -e ssh a h:b",
            "rsync -avze 'ssh -p 2' a h:b",
            "rsync --rsh=x a h:b",
            "rsync --rsync-path='sudo rsync' a h:b",
        ] {
            assert!(finds(cmd, "rsync", FindingKind::ExecFlag), "{cmd}");
        }
        assert!(finds(
            "rsync -a --delete a/ b/",
            "rsync",
            FindingKind::DeleteFlag
        ));
        assert!(finds(
            "rsync -a --remove-source-files a/ b/",
            "rsync",
            FindingKind::DeleteFlag
        ));
        assert!(ok("rsync -av --exclude target a/ b/").findings.is_empty());
        for cmd in [
            "ssh -o ProxyCommand=x host",
            "ssh -oProxyCommand=x host",
            "ssh -o 'proxycommand x' host",
            "ssh -o LocalCommand=x -o PermitLocalCommand=yes host",
            "ssh -F cfg host",
        ] {
            assert!(finds(cmd, "ssh", FindingKind::ExecFlag), "{cmd}");
        }
        assert!(finds("scp -S prog a h:b", "scp", FindingKind::ExecFlag));
        assert!(ok("ssh -p 22 host").findings.is_empty());
        assert!(finds(
            "zip -T -TT 'sh -c id' a.zip f",
            "zip",
            FindingKind::ExecFlag
        ));
        assert!(finds(
            "zip --unzip-command='sh' -T a.zip f",
            "zip",
            FindingKind::ExecFlag
        ));
        assert!(finds("zip -rm a.zip dir", "zip", FindingKind::DeleteFlag));
        assert!(ok("zip -r a.zip dir").findings.is_empty());
    }

    #[test]
    fn interpreters_are_flagged() {
        for (cmd, program) in [
            ("python3 -c 'print(1)'", "python3"),
            ("python3.11 x.py", "python3.11"),
            ("python", "python"),
            ("node app.js", "node"),
            ("deno run x.ts", "deno"),
            ("bun x.ts", "bun"),
            ("perl -e 1", "perl"),
            ("perl5.36 x", "perl5.36"),
            ("ruby x.rb", "ruby"),
            ("php x.php", "php"),
            ("lua5.4 x.lua", "lua5.4"),
            ("osascript -e x", "osascript"),
            ("pwsh -c x", "pwsh"),
            ("fish -c 'sudo id'", "fish"),
        ] {
            assert!(finds(cmd, program, FindingKind::Interpreter), "{cmd}");
        }
        assert!(ok("pythonic x").findings.is_empty());
        assert!(ok("nodemon").findings.is_empty());
        let line = ok("python3 -c 'print(1)'");
        assert_eq!(line.findings[0].evidence, "-c print(1)");
    }

    #[test]
    fn interactive_programs_can_escape_to_a_shell() {
        for cmd in [
            "less f",
            "more f",
            "man ls",
            "vi f",
            "vim f",
            "nvim f",
            "psql",
            "sqlite3 db",
        ] {
            let line = ok(cmd);
            let program = line.invocations[0].program().to_string();
            assert!(has(&line, &program, FindingKind::ShellEscape), "{cmd}");
        }
    }

    #[test]
    fn build_tools_run_project_code() {
        for (cmd, program) in [
            ("make", "make"),
            ("make -C sub test", "make"),
            ("npm run build", "npm"),
            ("npm install", "npm"),
            ("npm exec foo", "npm"),
            ("npx create-x", "npx"),
            ("yarn build", "yarn"),
            ("pnpm dlx x", "pnpm"),
            ("cargo run", "cargo"),
            ("cargo test --lib", "cargo"),
            ("cargo +nightly build", "cargo"),
            ("cargo --locked -q test", "cargo"),
            ("go test ./...", "go"),
            ("go generate ./...", "go"),
            ("pip install x", "pip"),
            ("pip3.11 install x", "pip3.11"),
            ("uv run x", "uv"),
            ("pytest -q", "pytest"),
            ("./gradlew build", "gradlew"),
        ] {
            assert!(finds(cmd, program, FindingKind::RunsProjectCode), "{cmd}");
        }
        for cmd in [
            "pip3.11 list",
            "cargo fmt",
            "cargo --version",
            "npm ls",
            "yarn why x",
            "go version",
            "pip list",
        ] {
            assert!(ok(cmd).findings.is_empty(), "{cmd}: {:?}", ok(cmd).findings);
        }
        assert!(finds(
            "cargo --config target.x.runner=sh build",
            "cargo",
            FindingKind::ExecFlag
        ));
        assert!(finds("go build -toolexec=x .", "go", FindingKind::ExecFlag));
    }

    #[test]
    fn launchers_that_are_not_unwrapped_are_exec_capable() {
        for (cmd, program) in [
            ("docker run --rm img sudo id", "docker"),
            ("parallel sudo ::: id", "parallel"),
            ("systemd-run sudo id", "systemd-run"),
        ] {
            assert!(finds(cmd, program, FindingKind::ExecFlag), "{cmd}");
        }
    }

    #[test]
    fn findings_point_at_their_invocation() {
        let line = ok("sudo find . -delete");
        assert_eq!(line.findings.len(), 1);
        assert_eq!(line.findings[0].invocation, 1);
        assert_eq!(line.findings[0].program, "find");
        assert_eq!(line.findings[0].evidence, "-delete");
        assert_eq!(line.findings_for(1).count(), 1);
        assert_eq!(line.findings_for(0).count(), 0);
    }

    // --- Command patterns --------------------------------------------------

    #[test]
    fn pattern_matches_program_and_prefix_words() {
        let push = pattern(&["git", "push"], &[]);
        assert!(first_match(&push, "git push"));
        assert!(first_match(&push, "git push origin main"));
        assert!(first_match(&push, "/usr/bin/git push"));
        assert!(!first_match(&push, "git pull"));
        assert!(!first_match(&push, "git log push"));
        assert!(!first_match(&push, "git"));
        assert!(!first_match(&push, "gitx push"));
        let absolute = pattern(&["/usr/bin/git", "push"], &[]);
        assert!(first_match(&absolute, "git push"));
    }

    #[test]
    fn pattern_skips_git_global_options() {
        let push = pattern(&["git", "push"], &[]);
        for cmd in [
            "git -c a=b push",
            "git -C dir push origin",
            "git --git-dir=.git --work-tree=. push",
            "git --git-dir .git push",
            "git --no-pager push",
            "git -P push",
            "git -p push",
            "git --bare push",
            "git --namespace=x push",
            "git --namespace x push",
            "git --config-env=a=B push",
            "git --no-optional-locks --literal-pathspecs push",
        ] {
            assert!(first_match(&push, cmd), "{cmd}");
        }
        assert!(
            !first_match(&push, "git --bogus push"),
            "git refuses unknown options"
        );
        assert!(
            !first_match(&push, "git -c push"),
            "`push` is -c's value here"
        );
    }

    #[test]
    fn pattern_skips_cargo_toolchain_and_global_options() {
        let test = pattern(&["cargo", "test"], &[]);
        assert!(first_match(&test, "cargo +nightly test"));
        assert!(first_match(&test, "cargo --locked -Z x test"));
        assert!(!first_match(&test, "cargo build"));
        // Other programs are compared word for word.
        let run = pattern(&["npm", "run"], &[]);
        assert!(first_match(&run, "npm run x"));
        assert!(!first_match(&run, "npm --silent run x"));
    }

    #[test]
    fn pattern_args_any_forms() {
        let find = pattern(&["find"], &["-exec", "-execdir", "-delete", "-fprint*"]);
        assert!(first_match(&find, "find . -delete"));
        assert!(first_match(&find, "find . -execdir ls ';'"));
        assert!(first_match(&find, "find . -fprint0 out"));
        assert!(!first_match(&find, "find . -name x"));
        assert!(!first_match(&find, "find . -delete2"));

        let tar = pattern(&["tar"], &["--to-command"]);
        assert!(first_match(&tar, "tar --to-command sh -xf a"));
        assert!(first_match(&tar, "tar --to-command=sh -xf a"));
        assert!(
            first_match(&tar, "tar --to-com=sh -xf a"),
            "getopt abbreviation"
        );
        assert!(
            !first_match(&tar, "tar --t=sh -xf a"),
            "one letter is too short"
        );
        assert!(!first_match(&tar, "tar -xf a"));

        let awk = pattern(&["awk"], &["system("]);
        assert!(first_match(&awk, "awk '{system(\"id\")}'"));
        assert!(first_match(&awk, "awk '{system (\"id\")}'"));
        assert!(!first_match(&awk, "awk '{print system}'"));
    }

    #[test]
    fn pattern_matches_inside_wrappers_through_find_in() {
        let sudo = pattern(&["sudo"], &[]);
        for cmd in [
            "env sudo id",
            "bash -lc 'sudo id'",
            "xargs -0 sudo",
            "/usr/bin/sudo id",
        ] {
            let line = ok(cmd);
            assert!(sudo.find_in(&line).is_some(), "{cmd}");
        }
        assert!(sudo.find_in(&ok("ls")).is_none());
    }

    #[test]
    fn pattern_new_rejects_empty_parts() {
        let bad = |prefix: &[&str], args: &[&str]| {
            CommandPattern::new(
                prefix.iter().map(|s| s.to_string()).collect(),
                args.iter().map(|s| s.to_string()).collect(),
            )
            .is_err()
        };
        assert!(bad(&[], &[]));
        assert!(bad(&[""], &[]));
        assert!(bad(&["/usr/bin/"], &[]));
        assert!(bad(&["git", ""], &[]));
        assert!(bad(&["find"], &[""]));
        assert!(bad(&["find"], &["*"]));
        assert!(bad(&["awk"], &["("]));
    }

    // --- Refusal API -------------------------------------------------------

    #[test]
    fn every_refusal_has_an_id_a_message_and_advice() {
        for (cmd, id) in [
            ("ls; id", "SHELL-001"),
            ("echo 'x", "SHELL-002"),
            ("s*do id", "CMD-001"),
            ("env -S x", "CMD-002"),
        ] {
            let e = refused(cmd);
            assert_eq!(e.rule_id(), id, "{cmd}");
            assert!(!e.advice().is_empty());
            assert!(e.to_string().len() > 20, "{e}");
        }
    }

    // --- One named test per trick and refusal from the brief ------------------

    /// `name: command => program;` — the command must run `program`.
    macro_rules! reveals {
        ($($name:ident: $cmd:expr => $program:expr;)*) => {$(
            #[test]
            fn $name() {
                let line = ok($cmd);
                assert!(
                    programs(&line).contains(&$program),
                    "{:?} should run {}: {:?}",
                    $cmd,
                    $program,
                    programs(&line)
                );
            }
        )*};
    }

    reveals! {
        trick_double_quoted_program: "\"sudo\" id" => "sudo";
        trick_backslash_in_program: "s\\udo id" => "sudo";
        trick_single_quoted_part_of_program: "'s'udo id" => "sudo";
        trick_assignment_before_program: "VAR=x sudo id" => "sudo";
        trick_absolute_path: "/usr/bin/sudo id" => "sudo";
        trick_env_i_with_assignment: "env -i FOO=1 sudo id" => "sudo";
        trick_nice_n: "nice -n 5 sudo id" => "sudo";
        trick_timeout_with_signal: "timeout -s KILL 5 sudo id" => "sudo";
        trick_nohup: "nohup sudo id" => "sudo";
        trick_xargs_0: "xargs -0 sudo" => "sudo";
        trick_busybox_sh_c: "busybox sh -c 'sudo id'" => "sudo";
        trick_absolute_env: "/usr/bin/env sudo id" => "sudo";
        trick_command_builtin: "command sudo id" => "sudo";
        trick_exec_builtin: "exec sudo id" => "sudo";
        trick_bash_lc_inner_sudo: "bash -lc \"sudo id\"" => "sudo";
        trick_bash_lc_inner_id: "bash -lc \"sudo id\"" => "id";
        trick_time: "time sudo id" => "sudo";
        trick_stdbuf: "stdbuf -oL sudo id" => "sudo";
        trick_setsid: "setsid sudo id" => "sudo";
        trick_ionice: "ionice -c 3 sudo id" => "sudo";
        trick_doas_inner: "doas sudo id" => "sudo";
        trick_versioned_shell: "zsh-5.9 -c 'sudo id'" => "sudo";
        trick_versioned_bash: "/usr/local/bin/bash5.2 -c 'sudo id'" => "sudo";
        trick_sudo_rs: "sudo-rs -u root id" => "id";
        trick_fd_exec: "fd -e rs -x sudo id" => "sudo";
        trick_find_exec: "find . -exec sudo id \\;" => "sudo";
    }

    /// `name: command => rule id;` — the command must be refused with that rule.
    macro_rules! refuses {
        ($($name:ident: $cmd:expr => $id:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(rule($cmd), $id, "{:?}", $cmd);
            }
        )*};
    }

    refuses! {
        refuse_semicolon: "ls; sudo id" => "SHELL-001";
        refuse_pipe: "ls | sudo tee x" => "SHELL-001";
        refuse_background: "ls & sudo id" => "SHELL-001";
        refuse_and_list: "ls && sudo id" => "SHELL-001";
        refuse_or_list: "ls || sudo id" => "SHELL-001";
        refuse_command_substitution: "echo $(sudo id)" => "SHELL-001";
        refuse_command_substitution_in_double_quotes: "echo \"$(sudo id)\"" => "SHELL-001";
        refuse_backticks: "echo `sudo id`" => "SHELL-001";
        refuse_backticks_in_double_quotes: "echo \"`sudo id`\"" => "SHELL-001";
        refuse_variable: "echo $HOME" => "SHELL-001";
        refuse_variable_in_double_quotes: "echo \"$HOME\"" => "SHELL-001";
        refuse_braced_variable: "echo ${HOME}" => "SHELL-001";
        refuse_input_redirection: "sort < in" => "SHELL-001";
        refuse_output_redirection: "ls > out" => "SHELL-001";
        refuse_append_redirection: "ls >> out" => "SHELL-001";
        refuse_input_process_substitution: "cat <(sudo id)" => "SHELL-001";
        refuse_output_process_substitution: "tee >(sudo sh)" => "SHELL-001";
        refuse_newline: "ls\nsudo id" => "SHELL-001";
        refuse_subshell: "(sudo id)" => "SHELL-001";
        refuse_group: "{ sudo id; }" => "SHELL-001";
        refuse_history: "echo !!" => "SHELL-001";
        refuse_brace_expansion: "{s,}udo id" => "SHELL-001";
        refuse_script_with_syntax: "sh -c 'a; b'" => "SHELL-001";
        refuse_unbalanced_single_quote: "echo 'a" => "SHELL-002";
        refuse_unbalanced_double_quote: "echo \"a" => "SHELL-002";
        refuse_empty: "" => "SHELL-002";
        refuse_glob_in_program_path: "/usr/bin/su* id" => "CMD-001";
        refuse_question_mark_in_program: "s?do id" => "CMD-001";
        refuse_empty_program: "'' id" => "CMD-001";
        refuse_env_split_string: "env -S 'sudo id'" => "CMD-002";
        refuse_xargs_unknown_option: "xargs --frobnicate sudo" => "CMD-002";
        refuse_busybox_without_applet: "busybox" => "CMD-002";
        refuse_sh_c_without_script: "sh -c" => "CMD-002";
        refuse_command_trap_in_script: "sh -c 'command trap \"sudo id\" EXIT'" => "CMD-002";
        refuse_builtin_alias_in_script: "bash -c 'builtin alias x=sudo'" => "CMD-002";
        refuse_fd_placeholder_program: "fd -x {} \\;" => "CMD-002";
    }

    #[test]
    fn more_programs_that_run_commands() {
        assert!(finds(
            "sort --compress-program=sh big",
            "sort",
            FindingKind::ExecFlag
        ));
        assert!(finds(
            "wget --use-askpass=x url",
            "wget",
            FindingKind::ExecFlag
        ));
        assert!(finds("fd . -X sudo", "fd", FindingKind::ExecFlag));
        assert!(finds("run0 id", "run0", FindingKind::ExecFlag));
        assert!(ok("sort -u f").findings.is_empty());
        assert!(ok("fd -e rs").findings.is_empty());
    }

    // --- Properties --------------------------------------------------------

    fn program_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "sudo", "env", "sh", "bash", "find", "git", "xargs", "timeout", "nice", "awk",
                "sed", "tar", "python3", "busybox", "rm", "ls",
            ])
            .prop_map(String::from),
            "[a-z][a-z0-9_.+-]{0,8}",
        ]
    }

    fn plain_args() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[a-zA-Z0-9_./=:-]{1,8}", 0..5)
    }

    /// `name` with quotes inserted at `at`, in one of several styles.
    fn requote(name: &str, at: usize, style: usize) -> String {
        let at = name
            .char_indices()
            .map(|(i, _)| i)
            .chain([name.len()])
            .nth(at % (name.chars().count() + 1))
            .unwrap_or(0);
        let (a, b) = name.split_at(at);
        match style % 6 {
            0 => format!("'{a}''{b}'"),
            1 => format!("\"{a}\"\"{b}\""),
            2 => format!("{a}'{b}'"),
            3 => format!("\"{a}\"{b}"),
            4 => {
                let mut out = String::new();
                for c in name.chars() {
                    out.push('\\');
                    out.push(c);
                }
                out
            }
            _ => format!("{a}''{b}"),
        }
    }

    proptest! {
        // No regression files: this module may not write outside itself. Cases
        // proptest found are pinned as named tests instead.
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn analyze_never_panics(cmd in any::<String>()) {
            for opts in [STRICT, LENIENT] {
                if let Ok(line) = analyze(&cmd, &opts) {
                    for inv in &line.invocations {
                        prop_assert!(!inv.argv[0].is_empty());
                        prop_assert!(!inv.argv[0].contains('/'));
                    }
                }
            }
        }

        #[test]
        fn analyze_never_panics_on_shell_like_text(
            cmd in "([a-z ]|[-'\"\\\\$;|&<>(){}*?!#=~\n\t]|sudo|sh -c|env|xargs|find|-exec|\\{\\}){0,24}"
        ) {
            for opts in [STRICT, LENIENT] {
                if let Ok(line) = analyze(&cmd, &opts) {
                    prop_assert!(!line.invocations.is_empty());
                    prop_assert_eq!(&line.invocations[0].argv[1..], &line.argv[1..]);
                }
            }
        }

        #[test]
        fn quotes_inside_the_program_name_change_nothing(
            program in program_name(),
            args in plain_args(),
            at in 0usize..16,
            style in 0usize..6,
        ) {
            let tail: String = args.iter().map(|a| format!(" {a}")).collect();
            let plain = format!("{program}{tail}");
            let quoted = format!("{}{tail}", requote(&program, at, style));
            for opts in [STRICT, LENIENT] {
                match (analyze(&plain, &opts), analyze(&quoted, &opts)) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(&a.invocations[0].argv[0], &b.invocations[0].argv[0]);
                        prop_assert_eq!(a, b);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a.rule_id(), b.rule_id()),
                    (a, b) => prop_assert!(false, "{plain:?} -> {a:?} but {quoted:?} -> {b:?}"),
                }
            }
        }

        #[test]
        fn a_script_given_to_sh_runs_the_same_commands(
            program in program_name(),
            args in plain_args(),
        ) {
            let cmd = format!("{program} {}", args.join(" "));
            if let Ok(direct) = analyze(&cmd, &STRICT) {
                let wrapped = analyze(&format!("sh -c '{cmd}'"), &STRICT);
                let wrapped = wrapped.map_err(|e| TestCaseError::fail(format!("{cmd}: {e}")))?;
                prop_assert_eq!(wrapped.invocations.len(), direct.invocations.len() + 1);
                for (w, d) in wrapped.invocations[1..].iter().zip(&direct.invocations) {
                    prop_assert_eq!(&w.argv, &d.argv);
                    prop_assert_eq!(&w.via[1..], d.via.as_slice());
                }
            }
        }
    }
}
