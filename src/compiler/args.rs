//! Argument classification for gcc and clang: a pure, table-driven module.
//!
//! Given a compiler invocation (response files already expanded), decide whether it is a
//! compile at all, whether its result can be cached, whether it could run on another machine,
//! which files it will write, and which arguments go to the preprocessor and into the cache key.
//! No I/O happens here: the caller answers questions about the file system through
//! [`ArgContext::path_kind`].
//!
//! The rules follow ccache's `argprocessing.cpp`/`compopt.cpp` and the research notes in
//! `shared/research/wrapper.md` §2 and §7.

use std::path::Path;

/// Which compiler driver family an invocation targets; a few rules differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompilerFamily {
    /// GNU gcc / g++ (and `cc`/`c++` when they are gcc).
    Gcc,
    /// LLVM clang / clang++.
    Clang,
}

impl CompilerFamily {
    /// Guesses the family from the compiler's file name (after following symlinks):
    /// anything whose name contains `clang` is clang, everything else is treated as gcc.
    pub fn from_name(name: &str) -> Self {
        if name.contains("clang") {
            Self::Clang
        } else {
            Self::Gcc
        }
    }
}

/// What a path names, as answered by the caller's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing exists at the path.
    Missing,
    /// A regular file (or `/dev/null`).
    File,
    /// A directory.
    Dir,
}

/// Everything outside the argument list that classification depends on.
pub struct ArgContext<'a> {
    /// The compiler family.
    pub family: CompilerFamily,
    /// Answers what a path (relative to the compile's working directory, or absolute) names.
    pub path_kind: &'a dyn Fn(&Path) -> PathKind,
    /// Names of environment variables set for the compile that make it uncacheable
    /// (the caller passes whether `DEPENDENCIES_OUTPUT` / `SUNPRO_DEPENDENCIES` are set).
    pub dependency_env_set: bool,
}

/// The source language of the one input, from `-x` or the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Language {
    /// `c`
    C,
    /// `c++`
    Cxx,
    /// `objective-c`
    ObjC,
    /// `objective-c++`
    ObjCxx,
    /// `assembler-with-cpp` (`.S`, `.sx`)
    AsmWithCpp,
    /// `assembler` (`.s`): not preprocessed
    Asm,
    /// `cpp-output` (`.i`): already preprocessed C
    CppOutput,
    /// `c++-cpp-output` (`.ii`): already preprocessed C++
    CxxCppOutput,
}

impl Language {
    /// The `-x` name of the language.
    pub fn as_x_arg(self) -> &'static str {
        match self {
            Self::C => "c",
            Self::Cxx => "c++",
            Self::ObjC => "objective-c",
            Self::ObjCxx => "objective-c++",
            Self::AsmWithCpp => "assembler-with-cpp",
            Self::Asm => "assembler",
            Self::CppOutput => "cpp-output",
            Self::CxxCppOutput => "c++-cpp-output",
        }
    }

    /// Whether the input must go through the preprocessor before it can be hashed.
    pub fn needs_preprocessing(self) -> bool {
        !matches!(self, Self::Asm | Self::CppOutput | Self::CxxCppOutput)
    }
}

/// What the compile produces as its main result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompileMode {
    /// `-c`: an object file.
    Object,
    /// `-S`: an assembly file.
    Assembly,
    /// `-fsyntax-only`: diagnostics only, no file.
    SyntaxOnly,
}

/// The kind of a file a compile writes; the cache stores one blob per kind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum OutputKind {
    /// The object (`-c`) or assembly (`-S`) file.
    Primary,
    /// The make dependency file (`-MD`, `-MMD`, `-MF`, `-Wp,-MD,…`).
    Dependency,
    /// The split DWARF file (`-gsplit-dwarf`).
    SplitDwarf,
    /// The coverage notes file (`-ftest-coverage`, `--coverage`).
    CoverageNotes,
    /// The stack usage file (`-fstack-usage`).
    StackUsage,
    /// The call graph file (`-fcallgraph-info`).
    CallGraphInfo,
}

/// One file the compile writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    /// What it is.
    pub kind: OutputKind,
    /// Its path as the compiler will write it: relative to the working directory, or absolute.
    pub path: String,
}

/// The user's choice of coloured diagnostics, from the last colour flag on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ColorChoice {
    /// `-fdiagnostics-color=always`, `-fdiagnostics-color`, `-fcolor-diagnostics`.
    Always,
    /// `-fdiagnostics-color=never`, `-fno-diagnostics-color`, `-fno-color-diagnostics`.
    Never,
    /// No flag, or `-fdiagnostics-color=auto`: colour when stderr is a terminal.
    Auto,
}

/// A single-input compile whose result can be cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompileJob {
    /// The input file as written on the command line.
    pub input: String,
    /// Its language.
    pub language: Language,
    /// What the compile produces.
    pub mode: CompileMode,
    /// Every file the compile writes, the primary output first (none for `-fsyntax-only`).
    pub outputs: Vec<Output>,
    /// Arguments for the preprocessor run that feeds the cache key: the full argument list
    /// without compile-only options (`-c`, `-S`, `-o FILE`, `-M*` dependency options, `-Wa,`,
    /// `-Werror`, colour flags, …), with `-E` appended. Empty when the language needs no
    /// preprocessing.
    pub preprocess_args: Vec<String>,
    /// Arguments that go into the cache key: all arguments except preprocessor-only ones
    /// (their effect is in the preprocessed text), colour flags, the input path and the
    /// dependency file name. The output path and `-MT`/`-MQ` values stay in when the
    /// result depends on them (dependency file target, `-gsplit-dwarf`, profiling).
    pub key_args: Vec<String>,
    /// Whether the result depends on the working directory beyond what the preprocessed
    /// text shows (debug info, coverage, profiling): the caller then hashes it.
    pub key_includes_cwd: bool,
    /// The user's colour choice.
    pub color: ColorChoice,
    /// Dependency options to append to the preprocessor run so that it writes the dependency
    /// file exactly as the compile would: `-MD`/`-MMD`, the user's `-MP`/`-MG`, the targets
    /// (`-MT`/`-MQ` as given, else the target the compiler would use) and `-MF <path>`.
    /// Empty when the compile writes no dependency file.
    pub dependency_args: Vec<String>,
    /// Whether the compiler records its own command line in the output
    /// (`-frecord-gcc-switches`, `-grecord-command-line`): then no colour flag may be added.
    pub records_command_line: bool,
    /// `Ok` when the compile could run on another machine, else why not.
    pub distributable: Result<(), NotDistributable>,
    /// The options for compiling the preprocessed input on another machine: every argument
    /// except the input, `-x`, the mode flag, `-o`, dependency and preprocessor-only options
    /// and colour flags (the worker adds `-x`, the mode, its own input and output names).
    pub remote_args: Vec<String>,
    /// The command line's macro definitions and removals (`-D`, `-U` and their long forms),
    /// in order, each as one joined argument, for a remote compile of text whose includes were
    /// expanded but whose macros were not (clang `-frewrite-includes`). `None` when other
    /// options also shape the macros (`-imacros`, `-A`, `-Wp,` or `-Xpreprocessor` beyond a
    /// dependency file): such text cannot be compiled faithfully elsewhere.
    pub macro_args: Option<Vec<String>>,
}

/// Why an invocation is not a compile: the real compiler runs with the original arguments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NotCompile {
    /// No `-c`, `-S` or `-fsyntax-only`: a link (or a compile-and-link).
    Link,
    /// `-E`: preprocessing only.
    Preprocess,
    /// `-M` or `-MM` without `-MD`/`-MMD`: dependency generation only.
    DependenciesOnly,
    /// No input file (`--version`, `-v`, `-print-*`, `-dumpversion`, …).
    NoInput,
    /// A configure probe (`conftest.*`).
    ConfigureProbe,
}

/// Why a compile cannot be cached: it runs locally, unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Uncacheable {
    /// More than one input file with `-c`/`-S`.
    MultipleSourceFiles,
    /// `-o -`.
    OutputToStdout,
    /// An extension or `-x` language meshcc does not handle.
    UnsupportedLanguage(String),
    /// An option whose effects cannot be captured (`-save-temps`, `-fdump-*`, …); names it.
    UnsupportedOption(String),
    /// `-o` names a directory, or its parent directory does not exist.
    BadOutputFile(String),
    /// A missing option value or otherwise malformed arguments.
    BadArguments(String),
    /// `DEPENDENCIES_OUTPUT` or `SUNPRO_DEPENDENCIES` is set.
    UnsupportedEnvironment,
    /// Precompiled headers are built or used.
    PrecompiledHeader,
    /// `-fprofile-use` and friends read profile data that is not hashed.
    ProfileUse,
    /// An argument is not valid UTF-8.
    NonUtf8Argument,
}

/// Why a cacheable compile must still run on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NotDistributable {
    /// An option that needs local files or local state; names it
    /// (`-fplugin`, `-specs`, `-B`, profiling/coverage, `-march=native`, `-gsplit-dwarf`, …).
    LocalOption(String),
    /// `-fsyntax-only`: nothing worth shipping.
    SyntaxOnly,
    /// The input language is not one a worker compiles (assembler).
    Language(Language),
}

/// The outcome of classifying one invocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// Not a compile: run the real compiler unchanged.
    NotCompile(NotCompile),
    /// A compile that cannot be cached: run the real compiler unchanged.
    Uncacheable(Uncacheable),
    /// A cacheable compile.
    Cacheable(CompileJob),
}

impl NotCompile {
    /// The stable statistics key for this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Link => "called_for_link",
            Self::Preprocess => "called_for_preprocessing",
            Self::DependenciesOnly => "dependencies_only",
            Self::NoInput => "no_input_file",
            Self::ConfigureProbe => "autoconf_test",
        }
    }
}

impl std::fmt::Display for NotCompile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Link => "called for linking (no -c, -S or -fsyntax-only)",
            Self::Preprocess => "called for preprocessing (-E)",
            Self::DependenciesOnly => "called for dependency generation only (-M or -MM)",
            Self::NoInput => "no input file",
            Self::ConfigureProbe => "configure probe (conftest.*)",
        })
    }
}

impl Uncacheable {
    /// The stable statistics key for this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MultipleSourceFiles => "multiple_source_files",
            Self::OutputToStdout => "output_to_stdout",
            Self::UnsupportedLanguage(_) => "unsupported_source_language",
            Self::UnsupportedOption(_) => "unsupported_compiler_option",
            Self::BadOutputFile(_) => "bad_output_file",
            Self::BadArguments(_) => "bad_compiler_arguments",
            Self::UnsupportedEnvironment => "unsupported_environment_variable",
            Self::PrecompiledHeader => "could_not_use_precompiled_header",
            Self::ProfileUse => "profile_use",
            Self::NonUtf8Argument => "non_utf8_argument",
        }
    }
}

impl std::fmt::Display for Uncacheable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MultipleSourceFiles => f.write_str("more than one source file in one compile"),
            Self::OutputToStdout => f.write_str("output goes to standard output (-o -)"),
            Self::UnsupportedLanguage(lang) => write!(f, "unsupported source language: {lang}"),
            Self::UnsupportedOption(opt) => {
                write!(f, "option {opt} has effects meshcc cannot capture exactly")
            }
            Self::BadOutputFile(path) => write!(
                f,
                "output file {path} is a directory, collides with another output, \
                 or its directory does not exist"
            ),
            Self::BadArguments(what) => write!(f, "malformed arguments: {what}"),
            Self::UnsupportedEnvironment => f.write_str(
                "DEPENDENCIES_OUTPUT or SUNPRO_DEPENDENCIES is set and makes the compiler write \
                 a dependency file",
            ),
            Self::PrecompiledHeader => f.write_str("a precompiled header is built or used"),
            Self::ProfileUse => {
                f.write_str("profile data is read (-fprofile-use and friends) and not hashed")
            }
            Self::NonUtf8Argument => f.write_str("an argument is not valid UTF-8"),
        }
    }
}

impl NotDistributable {
    /// The stable statistics key for this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::LocalOption(_) => "local_only_option",
            Self::SyntaxOnly => "syntax_only",
            Self::Language(_) => "local_only_language",
        }
    }
}

impl std::fmt::Display for NotDistributable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalOption(opt) => {
                write!(f, "option {opt} needs files or state of this machine")
            }
            Self::SyntaxOnly => f.write_str("-fsyntax-only produces nothing worth shipping"),
            Self::Language(lang) => {
                write!(f, "{} input is compiled locally", lang.as_x_arg())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The option table
// ---------------------------------------------------------------------------------------------

/// How an option takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// No value: the argument must equal the name.
    Flag,
    /// The value is the next argument: `-Xclang X`.
    Separate,
    /// The value is glued to the name (`-Wa,x`, `-fdump-tree-all`); matches every argument
    /// starting with the name, the value may be empty.
    Joined,
    /// `-Ifoo` or `-I foo`.
    JoinedOrSeparate,
}

/// What a matched option means to classification, beyond its [`Flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing special: goes where its flags say.
    Plain,
    /// `-c`, `-S`, `-fsyntax-only`.
    Mode(CompileMode),
    /// `-E`.
    Preprocess,
    /// `-o FILE`.
    Output,
    /// `-x LANG`.
    Lang,
    /// `-M`, `-MM`: dependency generation instead of compiling.
    DepOnly,
    /// `-MD`, `-MMD`: write a dependency file as a side effect.
    DepFile,
    /// `-MF FILE`.
    DepFileName,
    /// `-MT T`, `-MQ T`.
    DepTarget,
    /// `-MP`, `-MG`.
    DepFlag,
    /// `-Wp,…`: options for the preprocessor.
    Wp,
    /// `-Xpreprocessor X`.
    Xpreprocessor,
    /// `-Wa,…` and `-Xassembler X`: options for the assembler.
    Assembler,
    /// A colour flag with a fixed meaning.
    Color(ColorChoice),
    /// `-fdiagnostics-color=WHEN`.
    ColorValue,
    /// Any other `-g…` option: may switch debug information on or off.
    Debug,
    /// `-gsplit-dwarf` (true) / `-gno-split-dwarf` (false).
    SplitDwarf(bool),
    /// `-flto[=…]` (true) / `-fno-lto` (false).
    Lto(bool),
    /// `-ftest-coverage`, `--coverage` (true) / `-fno-test-coverage` (false).
    CoverageNotes(bool),
    /// `-fstack-usage` (true) / `-fno-stack-usage` (false).
    StackUsage(bool),
    /// `-fcallgraph-info[=…]`.
    CallGraphInfo,
    /// `-frecord-gcc-switches`, `-frecord-command-line` (true) / their `-fno-` forms.
    RecordF(bool),
    /// `-grecord-command-line`, `-grecord-gcc-switches` (true) / their `-gno-` forms.
    RecordG(bool),
    /// `-include FILE`: a `FILE.gch`/`FILE.pch` next to it would be used silently.
    Include,
}

/// Property bits of an option (ccache `compopt.cpp` style).
type Flags = u16;
/// Preprocessor-only: given to the `-E` run, left out of the key (its effect is in the output).
const CPP: Flags = 1;
/// Compile-only: not given to the `-E` run.
const COMP: Flags = 1 << 1;
/// Left out of the key.
const NO_HASH: Flags = 1 << 2;
/// Effects meshcc cannot capture: the compile is uncacheable.
const TOO_HARD: Flags = 1 << 3;
/// Builds or uses a precompiled header: uncacheable.
const PCH: Flags = 1 << 4;
/// Reads profile data: uncacheable.
const PROFILE_USE: Flags = 1 << 5;
/// Needs this machine's files or state: not distributable.
const LOCAL: Flags = 1 << 6;
/// Profiling or coverage: the result embeds the working directory and the object path.
const PROFILING: Flags = 1 << 7;

/// One row of the option table.
#[derive(Debug)]
struct Opt {
    name: &'static str,
    arity: Arity,
    role: Role,
    flags: Flags,
}

const fn opt(name: &'static str, arity: Arity, role: Role, flags: Flags) -> Opt {
    Opt {
        name,
        arity,
        role,
        flags,
    }
}

use Arity::{Flag, Joined, JoinedOrSeparate as JoinedOrSep, Separate};
use Role::Plain;

/// Every option classification needs to know. Exact names win over prefixes; among prefixes
/// (Joined, JoinedOrSeparate) the longest wins. Unknown options are kept everywhere.
#[rustfmt::skip]
static OPTIONS: &[Opt] = &[
    // What the invocation does.
    opt("-c", Flag, Role::Mode(CompileMode::Object), COMP),
    opt("-S", Flag, Role::Mode(CompileMode::Assembly), COMP),
    opt("-fsyntax-only", Flag, Role::Mode(CompileMode::SyntaxOnly), COMP),
    opt("-E", Flag, Role::Preprocess, 0),
    opt("-o", JoinedOrSep, Role::Output, COMP),
    opt("-x", JoinedOrSep, Role::Lang, 0),
    // Dependency files.
    opt("-M", Flag, Role::DepOnly, 0),
    opt("-MM", Flag, Role::DepOnly, 0),
    opt("-MD", Flag, Role::DepFile, COMP),
    opt("-MMD", Flag, Role::DepFile, COMP),
    opt("-MF", JoinedOrSep, Role::DepFileName, COMP | NO_HASH),
    opt("-MT", JoinedOrSep, Role::DepTarget, COMP),
    opt("-MQ", JoinedOrSep, Role::DepTarget, COMP),
    opt("-MP", Flag, Role::DepFlag, COMP),
    opt("-MG", Flag, Role::DepFlag, COMP),
    opt("-MJ", JoinedOrSep, Plain, TOO_HARD),
    // Preprocessor-only options.
    opt("-Wp,", Joined, Role::Wp, CPP),
    opt("-Xpreprocessor", Separate, Role::Xpreprocessor, CPP),
    opt("-D", JoinedOrSep, Plain, CPP),
    opt("-U", JoinedOrSep, Plain, CPP),
    opt("-I", JoinedOrSep, Plain, CPP),
    opt("-A", JoinedOrSep, Plain, CPP),
    opt("-include", JoinedOrSep, Role::Include, CPP),
    opt("-imacros", JoinedOrSep, Plain, CPP),
    opt("-isystem", JoinedOrSep, Plain, CPP),
    opt("-isystem-after", JoinedOrSep, Plain, CPP),
    opt("-cxx-isystem", JoinedOrSep, Plain, CPP),
    opt("-iquote", JoinedOrSep, Plain, CPP),
    opt("-idirafter", JoinedOrSep, Plain, CPP),
    opt("-isysroot", JoinedOrSep, Plain, CPP),
    opt("-iprefix", JoinedOrSep, Plain, CPP),
    opt("-iwithprefix", JoinedOrSep, Plain, CPP),
    opt("-iwithprefixbefore", JoinedOrSep, Plain, CPP),
    opt("-nostdinc", Flag, Plain, CPP),
    opt("-nostdinc++", Flag, Plain, CPP),
    opt("--include", Separate, Role::Include, CPP),
    opt("--include=", Joined, Role::Include, CPP),
    opt("--imacros", Separate, Plain, CPP),
    opt("--imacros=", Joined, Plain, CPP),
    opt("--include-directory", Separate, Plain, CPP),
    opt("--include-directory=", Joined, Plain, CPP),
    opt("--include-directory-after", Separate, Plain, CPP),
    opt("--include-directory-after=", Joined, Plain, CPP),
    opt("--include-prefix", Separate, Plain, CPP),
    opt("--include-prefix=", Joined, Plain, CPP),
    opt("--include-with-prefix", Separate, Plain, CPP),
    opt("--include-with-prefix=", Joined, Plain, CPP),
    opt("--include-with-prefix-before", Separate, Plain, CPP),
    opt("--include-with-prefix-before=", Joined, Plain, CPP),
    opt("--include-with-prefix-after", Separate, Plain, CPP),
    opt("--include-with-prefix-after=", Joined, Plain, CPP),
    opt("--define-macro", Separate, Plain, CPP),
    opt("--define-macro=", Joined, Plain, CPP),
    opt("--undefine-macro", Separate, Plain, CPP),
    opt("--undefine-macro=", Joined, Plain, CPP),
    opt("--no-standard-includes", Flag, Plain, CPP),
    // Compile-only options: the preprocessor run must not see them.
    opt("-Wa,", Joined, Role::Assembler, COMP),
    opt("-Xassembler", Separate, Role::Assembler, COMP),
    opt("-Wl,", Joined, Plain, COMP),
    opt("-Xlinker", Separate, Plain, COMP),
    opt("-L", JoinedOrSep, Plain, COMP),
    opt("-l", JoinedOrSep, Plain, COMP),
    opt("-u", Separate, Plain, COMP),
    opt("-z", Separate, Plain, COMP),
    opt("-T", JoinedOrSep, Plain, COMP),
    opt("-Werror", Flag, Plain, COMP),
    opt("-Wno-error", Flag, Plain, COMP),
    opt("-P", Flag, Plain, COMP),
    opt("-pie", Flag, Plain, COMP),
    opt("-rdynamic", Flag, Plain, COMP),
    opt("-v", Flag, Plain, COMP | LOCAL),
    // Colour: never hashed, never given to the preprocessor.
    opt("-fdiagnostics-color", Flag, Role::Color(ColorChoice::Always), COMP | NO_HASH),
    opt("-fdiagnostics-color=", Joined, Role::ColorValue, COMP | NO_HASH),
    opt("-fno-diagnostics-color", Flag, Role::Color(ColorChoice::Never), COMP | NO_HASH),
    opt("-fcolor-diagnostics", Flag, Role::Color(ColorChoice::Always), COMP | NO_HASH),
    opt("-fno-color-diagnostics", Flag, Role::Color(ColorChoice::Never), COMP | NO_HASH),
    // Debug information and side outputs.
    opt("-g", Joined, Role::Debug, 0),
    opt("-gsplit-dwarf", Flag, Role::SplitDwarf(true), LOCAL),
    opt("-gno-split-dwarf", Flag, Role::SplitDwarf(false), 0),
    opt("-gsplit-dwarf=", Joined, Plain, TOO_HARD),
    opt("-gtoggle", Flag, Plain, TOO_HARD),
    opt("-gen-cdb-fragment-path", Separate, Plain, TOO_HARD),
    opt("-grecord-command-line", Flag, Role::RecordG(true), 0),
    opt("-grecord-gcc-switches", Flag, Role::RecordG(true), 0),
    opt("-gno-record-command-line", Flag, Role::RecordG(false), 0),
    opt("-gno-record-gcc-switches", Flag, Role::RecordG(false), 0),
    opt("-frecord-gcc-switches", Flag, Role::RecordF(true), 0),
    opt("-frecord-command-line", Flag, Role::RecordF(true), 0),
    opt("-fno-record-gcc-switches", Flag, Role::RecordF(false), 0),
    opt("-fno-record-command-line", Flag, Role::RecordF(false), 0),
    opt("-flto", Flag, Role::Lto(true), 0),
    opt("-flto=", Joined, Role::Lto(true), 0),
    opt("-fno-lto", Flag, Role::Lto(false), 0),
    opt("-fstack-usage", Flag, Role::StackUsage(true), 0),
    opt("-fno-stack-usage", Flag, Role::StackUsage(false), 0),
    opt("-fcallgraph-info", Flag, Role::CallGraphInfo, 0),
    opt("-fcallgraph-info=", Joined, Role::CallGraphInfo, 0),
    // Profiling and coverage.
    opt("--coverage", Flag, Role::CoverageNotes(true), LOCAL | PROFILING),
    opt("-ftest-coverage", Flag, Role::CoverageNotes(true), LOCAL | PROFILING),
    opt("-fno-test-coverage", Flag, Role::CoverageNotes(false), 0),
    opt("-fprofile-", Joined, Plain, LOCAL | PROFILING),
    opt("-fcoverage-", Joined, Plain, LOCAL | PROFILING),
    opt("-fprofile-use", Joined, Plain, PROFILE_USE),
    opt("-fprofile-instr-use", Joined, Plain, PROFILE_USE),
    opt("-fprofile-sample-use", Joined, Plain, PROFILE_USE),
    opt("-fauto-profile", Joined, Plain, PROFILE_USE),
    opt("-fbranch-probabilities", Flag, Plain, PROFILE_USE),
    opt("-fprofile-dir", Joined, Plain, TOO_HARD),
    opt("-fprofile-note", Joined, Plain, TOO_HARD),
    // Precompiled headers.
    opt("-include-pch", Separate, Plain, PCH),
    opt("-emit-pch", Flag, Plain, PCH),
    opt("-fpch-", Joined, Plain, PCH),
    // Options that write or read files meshcc does not capture or hash.
    opt("-save-temps", Joined, Plain, TOO_HARD),
    opt("--save-temps", Joined, Plain, TOO_HARD),
    opt("-fdump-", Joined, Plain, TOO_HARD),
    opt("-frepo", Flag, Plain, TOO_HARD),
    opt("-ftime-trace", Joined, Plain, TOO_HARD),
    opt("-wrapper", Separate, Plain, TOO_HARD),
    opt("-fmodules", Joined, Plain, TOO_HARD),
    opt("-fcxx-modules", Flag, Plain, TOO_HARD),
    opt("-fmodule-header", Joined, Plain, TOO_HARD),
    opt("-fmodule-file=", Joined, Plain, TOO_HARD),
    opt("--serialize-diagnostics", Separate, Plain, TOO_HARD),
    opt("-Xclang", Separate, Plain, TOO_HARD),
    opt("-fplugin", Joined, Plain, TOO_HARD),
    opt("-specs", Separate, Plain, TOO_HARD),
    opt("-specs=", Joined, Plain, TOO_HARD),
    opt("--specs", Separate, Plain, TOO_HARD),
    opt("--specs=", Joined, Plain, TOO_HARD),
    opt("-B", JoinedOrSep, Plain, TOO_HARD),
    opt("--prefix", Separate, Plain, TOO_HARD),
    opt("--prefix=", Joined, Plain, TOO_HARD),
    opt("-###", Flag, Plain, TOO_HARD),
    opt("-aux-info", Separate, Plain, TOO_HARD),
    opt("-dumpdir", Separate, Plain, TOO_HARD),
    opt("-dumpbase", Separate, Plain, TOO_HARD),
    opt("-dumpbase-ext", Separate, Plain, TOO_HARD),
    opt("-fopt-info", Joined, Plain, TOO_HARD),
    opt("-fsave-optimization-record", Joined, Plain, TOO_HARD),
    opt("-foptimization-record-file=", Joined, Plain, TOO_HARD),
    opt("-fsanitize-ignorelist=", Joined, Plain, TOO_HARD),
    opt("-fsanitize-blacklist=", Joined, Plain, TOO_HARD),
    opt("-fsanitize-coverage-allowlist=", Joined, Plain, TOO_HARD),
    opt("-fsanitize-coverage-ignorelist=", Joined, Plain, TOO_HARD),
    opt("-fprofile-list=", Joined, Plain, TOO_HARD),
    opt("-fthinlto-index=", Joined, Plain, TOO_HARD),
    opt("-frandomize-layout-seed-file=", Joined, Plain, TOO_HARD),
    opt("-fbuild-session-file=", Joined, Plain, TOO_HARD),
    opt("-ivfsoverlay", JoinedOrSep, Plain, TOO_HARD),
    opt("-index-store-path", Separate, Plain, TOO_HARD),
    opt("--analyze", Flag, Plain, TOO_HARD),
    opt("--analyzer-output", Separate, Plain, TOO_HARD),
    opt("-emit-ast", Flag, Plain, TOO_HARD),
    opt("--config", Separate, Plain, TOO_HARD),
    opt("--config=", Joined, Plain, TOO_HARD),
    opt("-working-directory", JoinedOrSep, Plain, TOO_HARD),
    // Machine-dependent code generation.
    opt("-march=native", Flag, Plain, LOCAL),
    opt("-mcpu=native", Flag, Plain, LOCAL),
    opt("-mtune=native", Flag, Plain, LOCAL),
    // Options with a separate value that is not an input file.
    opt("-target", Separate, Plain, 0),
    opt("-arch", Separate, Plain, 0),
    opt("-mllvm", Separate, Plain, 0),
    opt("--param", Separate, Plain, 0),
    opt("--sysroot", Separate, Plain, 0),
    opt("-resource-dir", Separate, Plain, 0),
    opt("-gcc-toolchain", Separate, Plain, 0),
    opt("-imultilib", Separate, Plain, 0),
    opt("-iframework", JoinedOrSep, Plain, 0),
    opt("-Xarch_host", Separate, Plain, 0),
    opt("-Xarch_device", Separate, Plain, 0),
];

/// Finds the table row for an option-looking argument: an exact match first, then the longest
/// prefix among options that take a joined value.
fn lookup(arg: &str) -> Option<&'static Opt> {
    if let Some(exact) = OPTIONS.iter().find(|o| o.name == arg) {
        return Some(exact);
    }
    OPTIONS
        .iter()
        .filter(|o| matches!(o.arity, Joined | JoinedOrSep) && arg.starts_with(o.name))
        .max_by_key(|o| o.name.len())
}

/// Whether a `-g…` option switches debug information on (`Some(true)`), off (`Some(false)`,
/// `-g0`) or leaves the level alone (`None`: `-gz`, `-gno-…`, `-gcolumn-info`, …).
/// Unknown `-g` spellings count as "on": erring that way only adds the CWD to the key.
fn debug_effect(arg: &str) -> Option<bool> {
    const LEVEL_NEUTRAL: &[&str] = &[
        "-gz",
        "-gno-",
        "-gcolumn-info",
        "-gpubnames",
        "-ggnu-pubnames",
        "-gstrict-dwarf",
        "-gdescribe-dies",
        "-gas-",
        "-ginline-points",
        "-gstatement-frontiers",
        "-gvariable-location-views",
        "-ginternal-reset-location-views",
        "-gembed-source",
        "-gsimple-template-names",
        "-gen-",
    ];
    if arg == "-g0" {
        Some(false)
    } else if LEVEL_NEUTRAL.iter().any(|p| arg.starts_with(p)) {
        None
    } else {
        Some(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Languages and file names
// ---------------------------------------------------------------------------------------------

/// What a file extension or `-x` name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LangKind {
    /// A language meshcc handles.
    Lang(Language),
    /// A header: compiling it builds a precompiled header.
    Header,
}

/// Extensions each driver recognises, measured with gcc 12 and clang 14: gcc treats `.CC`,
/// `.CXX`, `.C++` as linker input (clang: C++), clang does not know `.sx`, `.HPP`, `.hp`,
/// `.h++`, `.tcc`. An extension a driver does not know is unsupported for it.
#[rustfmt::skip]
static EXTENSIONS: &[(&str, LangKind, bool, bool)] = &[
    // (extension, meaning, gcc knows it, clang knows it)
    ("c", LangKind::Lang(Language::C), true, true),
    ("C", LangKind::Lang(Language::Cxx), true, true),
    ("cc", LangKind::Lang(Language::Cxx), true, true),
    ("cp", LangKind::Lang(Language::Cxx), true, true),
    ("cpp", LangKind::Lang(Language::Cxx), true, true),
    ("CPP", LangKind::Lang(Language::Cxx), true, true),
    ("cxx", LangKind::Lang(Language::Cxx), true, true),
    ("c++", LangKind::Lang(Language::Cxx), true, true),
    ("CC", LangKind::Lang(Language::Cxx), false, true),
    ("CXX", LangKind::Lang(Language::Cxx), false, true),
    ("C++", LangKind::Lang(Language::Cxx), false, true),
    ("m", LangKind::Lang(Language::ObjC), true, true),
    ("mm", LangKind::Lang(Language::ObjCxx), true, true),
    ("M", LangKind::Lang(Language::ObjCxx), true, true),
    ("S", LangKind::Lang(Language::AsmWithCpp), true, true),
    ("sx", LangKind::Lang(Language::AsmWithCpp), true, false),
    ("s", LangKind::Lang(Language::Asm), true, true),
    ("i", LangKind::Lang(Language::CppOutput), true, true),
    ("ii", LangKind::Lang(Language::CxxCppOutput), true, true),
    ("h", LangKind::Header, true, true),
    ("hh", LangKind::Header, true, true),
    ("H", LangKind::Header, true, true),
    ("hpp", LangKind::Header, true, true),
    ("hxx", LangKind::Header, true, true),
    ("HPP", LangKind::Header, true, false),
    ("hp", LangKind::Header, true, false),
    ("h++", LangKind::Header, true, false),
    ("tcc", LangKind::Header, true, false),
];

/// The meaning of a `-x` language name, `None` when meshcc does not handle it.
fn lang_from_x(name: &str) -> Option<LangKind> {
    const LANGS: &[Language] = &[
        Language::C,
        Language::Cxx,
        Language::ObjC,
        Language::ObjCxx,
        Language::AsmWithCpp,
        Language::Asm,
        Language::CppOutput,
        Language::CxxCppOutput,
    ];
    const HEADERS: &[&str] = &[
        "c-header",
        "c++-header",
        "objective-c-header",
        "objective-c++-header",
    ];
    if let Some(lang) = LANGS.iter().find(|l| l.as_x_arg() == name) {
        Some(LangKind::Lang(*lang))
    } else if HEADERS.contains(&name) {
        Some(LangKind::Header)
    } else {
        None
    }
}

/// The meaning of a file's extension for the given driver.
fn lang_from_extension(path: &str, family: CompilerFamily) -> Result<LangKind, Uncacheable> {
    let ext = extension(basename(path)).unwrap_or("");
    EXTENSIONS
        .iter()
        .find(|(e, _, gcc, clang)| {
            *e == ext
                && match family {
                    CompilerFamily::Gcc => *gcc,
                    CompilerFamily::Clang => *clang,
                }
        })
        .map(|(_, kind, _, _)| *kind)
        .ok_or_else(|| {
            Uncacheable::UnsupportedLanguage(if ext.is_empty() {
                format!("{path} (no known extension)")
            } else {
                format!(".{ext}")
            })
        })
}

/// The last path component (the whole string when there is no `/`).
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The extension of a file name: what follows its last `.` (which may be the first character).
fn extension(name: &str) -> Option<&str> {
    name.rfind('.').map(|i| &name[i + 1..])
}

/// `path` with the extension of its last component replaced by `new_ext` (which includes the
/// dot), or `new_ext` appended when there is none. A leading dot counts as an extension dot:
/// gcc and clang both turn `-o out/.hidden -MD` into `out/.d` [measured].
fn replace_extension(path: &str, new_ext: &str) -> String {
    let dir_len = path.len() - basename(path).len();
    match path[dir_len..].rfind('.') {
        Some(i) => format!("{}{new_ext}", &path[..dir_len + i]),
        None => format!("{path}{new_ext}"),
    }
}

/// The object or assembly name the driver derives from the input when there is no `-o`: the
/// input's basename, in the working directory, with its last extension replaced. For a name
/// whose only dot is the first character gcc appends (`.c` -> `.c.o`) while clang replaces
/// (`.c` -> `.o`) [measured].
fn default_output(input: &str, new_ext: &str, family: CompilerFamily) -> String {
    let base = basename(input);
    if family == CompilerFamily::Gcc && base.rfind('.') == Some(0) {
        format!("{base}{new_ext}")
    } else {
        replace_extension(base, new_ext)
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning
// ---------------------------------------------------------------------------------------------

/// One argument, or an option together with its separate value.
#[derive(Debug)]
struct Item<'a> {
    /// The argument(s) as given: one, or two for an option with a separate value.
    tokens: &'a [String],
    /// What they are.
    kind: ItemKind<'a>,
}

#[derive(Debug)]
enum ItemKind<'a> {
    /// A table option and its value (empty for flags).
    Known(&'static Opt, &'a str),
    /// An option not in the table, or a non-option that names no file: kept everywhere.
    Other,
    /// An input file (`-` for standard input).
    Input,
}

/// Splits a `-Wp,` value of the form `-MD,FILE` / `-MMD,FILE` into (`-MD`|`-MMD`, FILE).
fn wp_dependency(value: &str) -> Option<(&'static str, &str)> {
    let (kind, file) = value.split_once(',')?;
    let kind = match kind {
        "-MD" => "-MD",
        "-MMD" => "-MMD",
        _ => return None,
    };
    (!file.is_empty() && !file.contains(',')).then_some((kind, file))
}

/// Everything the left-to-right scan learns about the arguments.
#[derive(Debug)]
struct Scan<'a> {
    items: Vec<Item<'a>>,
    /// The first reason found not to cache; reported only once the invocation is a compile.
    problem: Option<Uncacheable>,
    preprocess: bool,
    /// `-M` or `-MM`.
    dep_only: Option<&'a str>,
    object: bool,
    assembly: bool,
    syntax_only: bool,
    /// Input files with the `-x` language in force before each.
    inputs: Vec<(&'a str, Option<&'a str>)>,
    current_x: Option<&'a str>,
    /// The last `-o` value.
    output: Option<&'a str>,
    /// The last of `-MD`/`-MMD`.
    dep_file: Option<&'static str>,
    /// `-Wp,-M[M]D,FILE`: (the argument, `-MD`|`-MMD`, FILE).
    wp_dep: Option<(&'a str, &'static str, &'a str)>,
    /// The last `-MF` value.
    dep_file_name: Option<&'a str>,
    /// `-MT`/`-MQ` with their values, in order.
    dep_targets: Vec<(&'static str, &'a str)>,
    /// `-MP`, `-MG`, in order.
    dep_flags: Vec<&'static str>,
    color: ColorChoice,
    debug: bool,
    split_dwarf: bool,
    lto: bool,
    coverage_notes: Option<&'a str>,
    stack_usage: Option<&'a str>,
    callgraph_info: Option<&'a str>,
    record_f: bool,
    record_g: bool,
    /// Profiling or coverage options were seen.
    profiling: bool,
    /// The first option that keeps the compile on this machine.
    local: Option<&'a str>,
}

impl<'a> Scan<'a> {
    fn run(args: &'a [String], ctx: &ArgContext) -> Self {
        let mut s = Scan {
            items: Vec::new(),
            problem: None,
            preprocess: false,
            dep_only: None,
            object: false,
            assembly: false,
            syntax_only: false,
            inputs: Vec::new(),
            current_x: None,
            output: None,
            dep_file: None,
            wp_dep: None,
            dep_file_name: None,
            dep_targets: Vec::new(),
            dep_flags: Vec::new(),
            color: ColorChoice::Auto,
            debug: false,
            split_dwarf: false,
            lto: false,
            coverage_notes: None,
            stack_usage: None,
            callgraph_info: None,
            record_f: false,
            record_g: false,
            profiling: false,
            local: None,
        };
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].as_str();
            let (kind, taken) = if arg == "-" {
                s.inputs.push((arg, s.current_x));
                (ItemKind::Input, 1)
            } else if arg.starts_with('-') {
                match lookup(arg) {
                    // `-xHost` and friends (uppercase after `-x`) are ordinary options.
                    Some(o)
                        if o.role == Role::Lang
                            && arg[2..].starts_with(|c: char| c.is_ascii_uppercase()) =>
                    {
                        (ItemKind::Other, 1)
                    }
                    Some(o) => {
                        let joined = arg.len() > o.name.len();
                        let (value, taken) = match o.arity {
                            Flag => ("", 1),
                            Joined => (&arg[o.name.len()..], 1),
                            JoinedOrSep if joined => (&arg[o.name.len()..], 1),
                            Separate | JoinedOrSep => match args.get(i + 1) {
                                Some(v) => (v.as_str(), 2),
                                None => {
                                    s.set_problem(Uncacheable::BadArguments(format!(
                                        "{arg} needs a value"
                                    )));
                                    s.items.push(Item {
                                        tokens: &args[i..],
                                        kind: ItemKind::Other,
                                    });
                                    break;
                                }
                            },
                        };
                        s.apply(o, arg, value, ctx);
                        (ItemKind::Known(o, value), taken)
                    }
                    None => (ItemKind::Other, 1),
                }
            } else if arg == "/dev/null" || (ctx.path_kind)(Path::new(arg)) == PathKind::File {
                s.inputs.push((arg, s.current_x));
                (ItemKind::Input, 1)
            } else {
                (ItemKind::Other, 1)
            };
            s.items.push(Item {
                tokens: &args[i..i + taken],
                kind,
            });
            i += taken;
        }
        s
    }

    fn set_problem(&mut self, problem: Uncacheable) {
        self.problem.get_or_insert(problem);
    }

    /// Records what one table option means.
    fn apply(&mut self, o: &'static Opt, arg: &'a str, value: &'a str, ctx: &ArgContext) {
        if o.flags & TOO_HARD != 0 {
            self.set_problem(Uncacheable::UnsupportedOption(arg.to_string()));
        }
        if o.flags & PCH != 0 {
            self.set_problem(Uncacheable::PrecompiledHeader);
        }
        if o.flags & PROFILE_USE != 0 {
            self.set_problem(Uncacheable::ProfileUse);
        }
        if o.flags & LOCAL != 0 {
            self.local.get_or_insert(arg);
        }
        if o.flags & PROFILING != 0 {
            self.profiling = true;
        }
        match o.role {
            Role::Plain => {}
            Role::Mode(CompileMode::Object) => self.object = true,
            Role::Mode(CompileMode::Assembly) => self.assembly = true,
            Role::Mode(CompileMode::SyntaxOnly) => self.syntax_only = true,
            Role::Preprocess => self.preprocess = true,
            Role::Output => self.output = Some(value),
            Role::Lang => self.current_x = (value != "none").then_some(value),
            Role::DepOnly => {
                self.dep_only.get_or_insert(arg);
            }
            Role::DepFile => self.dep_file = Some(o.name),
            Role::DepFileName => self.dep_file_name = Some(value),
            Role::DepTarget => self.dep_targets.push((o.name, value)),
            Role::DepFlag => self.dep_flags.push(o.name),
            Role::Wp => match wp_dependency(value) {
                Some((kind, file)) => self.wp_dep = Some((arg, kind, file)),
                // Other dependency options or -P hidden in -Wp, change what the
                // preprocessor writes in ways the key would not see.
                None if value.split(',').any(|p| p.starts_with("-M") || p == "-P") => {
                    self.set_problem(Uncacheable::UnsupportedOption(arg.to_string()));
                }
                None => {}
            },
            Role::Xpreprocessor => {
                if value.starts_with("-M") || value == "-P" {
                    self.set_problem(Uncacheable::UnsupportedOption(format!("{arg} {value}")));
                }
            }
            Role::Assembler => {
                // Listings (-a…), dependency output (--MD) and output names write files.
                let writes =
                    |p: &str| p.starts_with("-a") || p.starts_with("--MD") || p.starts_with("-o");
                if value.split(',').any(writes) {
                    self.set_problem(Uncacheable::UnsupportedOption(arg.to_string()));
                }
            }
            Role::Color(choice) => self.color = choice,
            Role::ColorValue => match value {
                "always" => self.color = ColorChoice::Always,
                "never" => self.color = ColorChoice::Never,
                "auto" => self.color = ColorChoice::Auto,
                _ => self.set_problem(Uncacheable::BadArguments(format!(
                    "{arg}: expected always, never or auto"
                ))),
            },
            Role::Debug => {
                if let Some(on) = debug_effect(arg) {
                    self.debug = on;
                }
            }
            Role::SplitDwarf(on) => self.split_dwarf = on,
            Role::Lto(on) => self.lto = on,
            Role::CoverageNotes(on) => self.coverage_notes = on.then_some(arg),
            Role::StackUsage(on) => self.stack_usage = on.then_some(arg),
            Role::CallGraphInfo => self.callgraph_info = Some(arg),
            Role::RecordF(on) => self.record_f = on,
            Role::RecordG(on) => self.record_g = on,
            Role::Include => {
                let pch = |ext: &str| {
                    (ctx.path_kind)(Path::new(&format!("{value}{ext}"))) != PathKind::Missing
                };
                if pch(".gch") || pch(".pch") {
                    self.set_problem(Uncacheable::PrecompiledHeader);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

/// Classifies one compiler invocation.
///
/// `args` are the compiler's arguments without `argv[0]`, with response files already
/// expanded (see [`super::rsp::expand_response_files`]). Never panics, whatever the arguments.
pub fn classify(args: &[String], ctx: &ArgContext) -> Verdict {
    let scan = Scan::run(args, ctx);
    match decide(&scan, ctx) {
        Ok(job) => Verdict::Cacheable(job),
        Err(Stop::NotCompile(reason)) => Verdict::NotCompile(reason),
        Err(Stop::Uncacheable(reason)) => Verdict::Uncacheable(reason),
    }
}

/// Why classification stopped short of a [`CompileJob`].
enum Stop {
    NotCompile(NotCompile),
    Uncacheable(Uncacheable),
}

fn not_compile(reason: NotCompile) -> Stop {
    Stop::NotCompile(reason)
}

fn uncacheable(reason: Uncacheable) -> Stop {
    Stop::Uncacheable(reason)
}

fn unsupported(option: &str) -> Stop {
    uncacheable(Uncacheable::UnsupportedOption(option.to_string()))
}

/// The flag that selects a mode; it stands for the mode in the key.
fn mode_flag(mode: CompileMode) -> &'static str {
    match mode {
        CompileMode::Object => "-c",
        CompileMode::Assembly => "-S",
        CompileMode::SyntaxOnly => "-fsyntax-only",
    }
}

/// Turns the scan into a verdict: first whether it is a compile at all, then whether it can
/// be cached, then the job.
fn decide(s: &Scan, ctx: &ArgContext) -> Result<CompileJob, Stop> {
    if s.preprocess {
        return Err(not_compile(NotCompile::Preprocess));
    }
    if s.dep_only.is_some() && s.dep_file.is_none() && s.wp_dep.is_none() {
        return Err(not_compile(NotCompile::DependenciesOnly));
    }
    let Some(&(input, x_lang)) = s.inputs.first() else {
        return Err(not_compile(NotCompile::NoInput));
    };
    if basename(input).starts_with("conftest.") {
        return Err(not_compile(NotCompile::ConfigureProbe));
    }
    let mode = if s.syntax_only {
        CompileMode::SyntaxOnly
    } else if s.assembly {
        CompileMode::Assembly
    } else if s.object {
        CompileMode::Object
    } else {
        return Err(not_compile(NotCompile::Link));
    };
    if let Some(problem) = &s.problem {
        return Err(uncacheable(problem.clone()));
    }
    if let Some(option) = s.dep_only {
        return Err(unsupported(option));
    }
    if ctx.dependency_env_set {
        return Err(uncacheable(Uncacheable::UnsupportedEnvironment));
    }
    if s.inputs.len() > 1 {
        return Err(uncacheable(Uncacheable::MultipleSourceFiles));
    }
    if input == "-" {
        return Err(unsupported("- (standard input)"));
    }
    let language = match x_lang {
        Some(name) => {
            lang_from_x(name).ok_or_else(|| Uncacheable::UnsupportedLanguage(format!("-x {name}")))
        }
        None => lang_from_extension(input, ctx.family),
    }
    .map_err(uncacheable)?;
    let language = match language {
        LangKind::Lang(language) => language,
        LangKind::Header => return Err(uncacheable(Uncacheable::PrecompiledHeader)),
    };
    if let Some(output) = s.output {
        check_output(output, ctx)?;
    }

    let primary = match mode {
        CompileMode::SyntaxOnly => None,
        CompileMode::Object => Some(
            s.output
                .map_or_else(|| default_output(input, ".o", ctx.family), str::to_string),
        ),
        CompileMode::Assembly => Some(
            s.output
                .map_or_else(|| default_output(input, ".s", ctx.family), str::to_string),
        ),
    };
    let outputs_and_deps = side_outputs(s, ctx, input, language, mode, primary.as_deref())?;
    let SideOutputs {
        outputs,
        dependency_args,
        dep_written,
        split_dwarf,
    } = outputs_and_deps;

    let preprocess_args = if language.needs_preprocessing() {
        preprocess_args(s)
    } else {
        Vec::new()
    };
    let keep_output = dep_written || split_dwarf || s.profiling;
    let key_args = key_args(s, language, mode, keep_output, dep_written);

    let distributable = if mode == CompileMode::SyntaxOnly {
        Err(NotDistributable::SyntaxOnly)
    } else if matches!(language, Language::Asm | Language::AsmWithCpp) {
        Err(NotDistributable::Language(language))
    } else if let Some(option) = s.local {
        Err(NotDistributable::LocalOption(option.to_string()))
    } else {
        Ok(())
    };

    Ok(CompileJob {
        input: input.to_string(),
        language,
        mode,
        outputs,
        preprocess_args,
        key_args,
        key_includes_cwd: s.debug || s.profiling,
        color: s.color,
        dependency_args,
        records_command_line: s.record_f || s.record_g,
        distributable,
        remote_args: remote_args(s),
        macro_args: macro_args(s),
    })
}

/// Rejects `-o` values the compile cannot write or meshcc cannot store.
fn check_output(output: &str, ctx: &ArgContext) -> Result<(), Stop> {
    if output == "-" {
        return Err(uncacheable(Uncacheable::OutputToStdout));
    }
    if matches!(extension(basename(output)), Some("gch" | "pch" | "pth")) {
        return Err(uncacheable(Uncacheable::PrecompiledHeader));
    }
    if output == "/dev/null" {
        return Ok(());
    }
    let bad = || uncacheable(Uncacheable::BadOutputFile(output.to_string()));
    if (ctx.path_kind)(Path::new(output)) == PathKind::Dir {
        return Err(bad());
    }
    let dir = &output[..output.len() - basename(output).len()];
    if !dir.is_empty() && (ctx.path_kind)(Path::new(dir)) != PathKind::Dir {
        return Err(bad());
    }
    Ok(())
}

/// The files a compile writes and how to reproduce its dependency file.
struct SideOutputs {
    outputs: Vec<Output>,
    dependency_args: Vec<String>,
    /// A dependency file is written (its target line names the object).
    dep_written: bool,
    /// A `.dwo` file is written (the object names it).
    split_dwarf: bool,
}

/// Derives every output file from the primary output, following what gcc 12 and clang 14 do
/// [measured]; where they are unclear (no primary output, `-o /dev/null`, `-S` with split
/// DWARF) the compile is uncacheable.
fn side_outputs(
    s: &Scan,
    ctx: &ArgContext,
    input: &str,
    language: Language,
    mode: CompileMode,
    primary: Option<&str>,
) -> Result<SideOutputs, Stop> {
    let mut outputs = Vec::new();
    if let Some(path) = primary {
        outputs.push(Output {
            kind: OutputKind::Primary,
            path: path.to_string(),
        });
    }
    // Side files named after the object; without one the drivers fall back to names from the
    // input or `-dumpbase` (gcc: `-MD -fsyntax-only x.c` writes `a-x.d`).
    let derive = |option: &str, ext: &str| match primary {
        Some(path) if path != "/dev/null" => Ok(replace_extension(path, ext)),
        _ => Err(unsupported(option)),
    };

    // Dependency file.
    let dep_kind = match (s.dep_file, s.wp_dep) {
        (Some(md), Some((arg, kind, _))) if md != kind => return Err(unsupported(arg)),
        (Some(md), _) => Some(md),
        (None, Some((_, kind, _))) => Some(kind),
        (None, None) => None,
    };
    if let (Some((arg, _, _)), Some(_)) = (s.wp_dep, s.dep_file_name) {
        // gcc writes the -Wp file, clang the -MF file [measured].
        return Err(unsupported(arg));
    }
    let mut dependency_args = Vec::new();
    let mut dep_written = false;
    // Assembler and already-preprocessed inputs write no dependency file [measured].
    if let Some(kind) = dep_kind.filter(|_| language.needs_preprocessing()) {
        let option = s.wp_dep.map_or(kind, |(arg, _, _)| arg);
        let Some(object) = primary else {
            return Err(unsupported(option));
        };
        let path = match (s.wp_dep, s.dep_file_name) {
            (Some((_, _, file)), _) => file.to_string(),
            (None, Some(file)) => file.to_string(),
            (None, None) => derive(option, ".d")?,
        };
        if path != "/dev/null" {
            dep_written = true;
            dependency_args.push(kind.to_string());
            dependency_args.extend(s.dep_flags.iter().map(|f| f.to_string()));
            if s.dep_targets.is_empty() {
                // The default target is quoted like -MQ. gcc given only -Wp,-M[M]D,f names
                // the target after the source, even with -o or -S [measured].
                let target = if ctx.family == CompilerFamily::Gcc && s.dep_file.is_none() {
                    default_output(input, ".o", CompilerFamily::Gcc)
                } else {
                    object.to_string()
                };
                dependency_args.extend(["-MQ".to_string(), target]);
            }
            for (name, value) in &s.dep_targets {
                dependency_args.extend([name.to_string(), value.to_string()]);
            }
            dependency_args.extend(["-MF".to_string(), path.clone()]);
            outputs.push(Output {
                kind: OutputKind::Dependency,
                path,
            });
        }
    }

    // Split DWARF: gcc writes the .dwo for every -c with -gsplit-dwarf, even -g0 or -flto;
    // clang only with debug info and without LTO; with -S clang names it after the input
    // and gcc writes none [measured].
    let mut split_dwarf = false;
    if s.split_dwarf {
        if mode != CompileMode::Object {
            return Err(unsupported("-gsplit-dwarf"));
        }
        if ctx.family == CompilerFamily::Gcc || (s.debug && !s.lto) {
            split_dwarf = true;
            let path = derive("-gsplit-dwarf", ".dwo")?;
            outputs.push(Output {
                kind: OutputKind::SplitDwarf,
                path,
            });
        }
    }
    // Coverage notes are written with -c and -S, with or without LTO [measured].
    if let Some(option) = s.coverage_notes {
        let path = derive(option, ".gcno")?;
        outputs.push(Output {
            kind: OutputKind::CoverageNotes,
            path,
        });
    }
    // Stack usage and call graph files are not written with LTO [measured].
    if let Some(option) = s.stack_usage.filter(|_| !s.lto) {
        let path = derive(option, ".su")?;
        outputs.push(Output {
            kind: OutputKind::StackUsage,
            path,
        });
    }
    if let Some(option) = s.callgraph_info.filter(|_| !s.lto) {
        let path = derive(option, ".ci")?;
        outputs.push(Output {
            kind: OutputKind::CallGraphInfo,
            path,
        });
    }

    // Two outputs on one path overwrite each other (`-MD -o x.o.d` [measured]).
    for (i, a) in outputs.iter().enumerate() {
        if outputs[..i].iter().any(|b| b.path == a.path) {
            return Err(uncacheable(Uncacheable::BadOutputFile(a.path.clone())));
        }
    }
    Ok(SideOutputs {
        outputs,
        dependency_args,
        dep_written,
        split_dwarf,
    })
}

/// The arguments for the `-E` run: everything but compile-only options, in order, then `-E`.
fn preprocess_args(s: &Scan) -> Vec<String> {
    let mut out = Vec::new();
    for item in &s.items {
        let keep = match item.kind {
            ItemKind::Input | ItemKind::Other => true,
            ItemKind::Known(o, value) => {
                o.flags & COMP == 0 && !(o.role == Role::Wp && wp_dependency(value).is_some())
            }
        };
        if keep {
            out.extend(item.tokens.iter().cloned());
        }
    }
    out.push("-E".to_string());
    out
}

/// The options for a remote compile of the preprocessed input (see [`CompileJob::remote_args`]).
fn remote_args(s: &Scan) -> Vec<String> {
    let mut out = Vec::new();
    for item in &s.items {
        let keep = match item.kind {
            ItemKind::Input => false,
            ItemKind::Other => true,
            ItemKind::Known(o, _) => {
                !matches!(
                    o.role,
                    Role::Lang
                        | Role::Mode(_)
                        | Role::Output
                        | Role::DepFile
                        | Role::DepFileName
                        | Role::DepTarget
                        | Role::DepFlag
                        | Role::Wp
                        | Role::Xpreprocessor
                        | Role::Color(_)
                        | Role::ColorValue
                ) && o.flags & CPP == 0
            }
        };
        if keep {
            out.extend(item.tokens.iter().cloned());
        }
    }
    out
}

/// The macro options for a remote compile of include-expanded text (see
/// [`CompileJob::macro_args`]).
fn macro_args(s: &Scan) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for item in &s.items {
        let ItemKind::Known(o, value) = item.kind else {
            continue;
        };
        match o.name {
            "-D" | "--define-macro" | "--define-macro=" => out.push(format!("-D{value}")),
            "-U" | "--undefine-macro" | "--undefine-macro=" => out.push(format!("-U{value}")),
            "-imacros" | "--imacros" | "--imacros=" | "-A" | "-Xpreprocessor" => return None,
            "-Wp," if wp_dependency(value).is_none() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// The arguments for the cache key: the language and mode first, then every argument except
/// the input, `-x`, mode flags, preprocessor-only and unhashed options; `-o` and `-MT`/`-MQ`
/// only when the result names them.
fn key_args(
    s: &Scan,
    language: Language,
    mode: CompileMode,
    keep_output: bool,
    dep_written: bool,
) -> Vec<String> {
    let mut key = vec![
        "-x".to_string(),
        language.as_x_arg().to_string(),
        mode_flag(mode).to_string(),
    ];
    for item in &s.items {
        match item.kind {
            ItemKind::Input => {}
            ItemKind::Other => key.extend(item.tokens.iter().cloned()),
            ItemKind::Known(o, value) => match o.role {
                Role::Lang | Role::Mode(_) => {}
                // The dependency request stays, its file name does not; other -Wp, options
                // are preprocessor-only.
                Role::Wp => {
                    if let Some((kind, _)) = wp_dependency(value) {
                        key.push(format!("-Wp,{kind}"));
                    }
                }
                Role::Output if keep_output => key.extend(["-o".to_string(), value.to_string()]),
                Role::Output => {}
                Role::DepTarget if dep_written => {
                    key.extend([o.name.to_string(), value.to_string()])
                }
                Role::DepTarget => {}
                // A recorded command line (clang's -grecord-command-line records every
                // option) makes even preprocessor-only options part of the output.
                _ if o.flags & CPP != 0 && (s.record_f || s.record_g) => {
                    key.extend(item.tokens.iter().cloned())
                }
                _ if o.flags & (CPP | NO_HASH) != 0 => {}
                _ => key.extend(item.tokens.iter().cloned()),
            },
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FILES: &[&str] = &[
        "foo.c",
        "src/foo.c",
        "a.c",
        "b.c",
        "x.cpp",
        "x.CXX",
        "x.sx",
        "x.s",
        "x.S",
        "x.i",
        "x.ii",
        "x.h",
        "x.hpp",
        "x.m",
        "x.mm",
        "x.ccc",
        "conftest.c",
        "src/conftest.cpp",
        "src/foo",
        "src/foo.c.c",
        ".c",
        "pre.h",
        "pch.h",
        "pch.h.gch",
        "out/existing.o",
        "file",
    ];
    const DIRS: &[&str] = &["out", "src", "/", "/tmp", "dir", "pchdir.h.gch"];

    fn fake_fs(path: &Path) -> PathKind {
        let p = path.to_str().unwrap_or("");
        let trimmed = if p.len() > 1 {
            p.trim_end_matches('/')
        } else {
            p
        };
        if FILES.contains(&p) {
            PathKind::File
        } else if DIRS.contains(&trimmed) {
            PathKind::Dir
        } else {
            PathKind::Missing
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn classify_with(family: CompilerFamily, env: bool, args: &[&str]) -> Verdict {
        let ctx = ArgContext {
            family,
            path_kind: &fake_fs,
            dependency_env_set: env,
        };
        classify(&strings(args), &ctx)
    }

    fn gcc(args: &[&str]) -> Verdict {
        classify_with(CompilerFamily::Gcc, false, args)
    }

    fn clang(args: &[&str]) -> Verdict {
        classify_with(CompilerFamily::Clang, false, args)
    }

    fn job_of(v: Verdict) -> CompileJob {
        match v {
            Verdict::Cacheable(job) => job,
            other => panic!("expected cacheable, got {other:?}"),
        }
    }

    fn job(args: &[&str]) -> CompileJob {
        job_of(gcc(args))
    }

    fn outputs_of(job: &CompileJob) -> Vec<(OutputKind, &str)> {
        job.outputs
            .iter()
            .map(|o| (o.kind, o.path.as_str()))
            .collect()
    }

    fn unsupported_opt(args: &[&str]) -> String {
        match gcc(args) {
            Verdict::Uncacheable(Uncacheable::UnsupportedOption(o)) => o,
            other => panic!("expected unsupported option for {args:?}, got {other:?}"),
        }
    }

    use OutputKind::*;

    #[test]
    fn not_a_compile() {
        let cases: &[(&[&str], NotCompile)] = &[
            (&["foo.c", "-o", "foo"], NotCompile::Link),
            (&["foo.c", "a.c"], NotCompile::Link),
            (&["-E", "foo.c"], NotCompile::Preprocess),
            (&["-E", "-c", "foo.c"], NotCompile::Preprocess),
            (
                &["-E", "-save-temps", "-c", "foo.c"],
                NotCompile::Preprocess,
            ),
            (&["-M", "foo.c"], NotCompile::DependenciesOnly),
            (&["-MM", "-c", "foo.c"], NotCompile::DependenciesOnly),
            (&["--version"], NotCompile::NoInput),
            (&["-c", "-O2"], NotCompile::NoInput),
            (&["-c", "missing.c"], NotCompile::NoInput),
            (&["-c", "src"], NotCompile::NoInput),
            (&["-c", "conftest.c"], NotCompile::ConfigureProbe),
            (
                &["src/conftest.cpp", "-o", "conftest"],
                NotCompile::ConfigureProbe,
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(gcc(args), Verdict::NotCompile(expected.clone()), "{args:?}");
        }
    }

    #[test]
    fn uncacheable_verdicts() {
        let cases: &[(&[&str], Uncacheable)] = &[
            (&["-c", "a.c", "b.c"], Uncacheable::MultipleSourceFiles),
            (&["-c", "foo.c", "-o", "-"], Uncacheable::OutputToStdout),
            (
                &["-c", "x.ccc"],
                Uncacheable::UnsupportedLanguage(".ccc".into()),
            ),
            (
                &["-c", "file"],
                Uncacheable::UnsupportedLanguage("file (no known extension)".into()),
            ),
            (
                &["-x", "fortran", "-c", "foo.c"],
                Uncacheable::UnsupportedLanguage("-x fortran".into()),
            ),
            (
                &["-c", "foo.c", "-o", "out"],
                Uncacheable::BadOutputFile("out".into()),
            ),
            (
                &["-c", "foo.c", "-o", "missing/x.o"],
                Uncacheable::BadOutputFile("missing/x.o".into()),
            ),
            (
                &["-c", "foo.c", "-o", "file/x.o"],
                Uncacheable::BadOutputFile("file/x.o".into()),
            ),
            (
                &["-c", "foo.c", "-I"],
                Uncacheable::BadArguments("-I needs a value".into()),
            ),
            (
                &["-c", "foo.c", "-o"],
                Uncacheable::BadArguments("-o needs a value".into()),
            ),
            (
                &["-c", "foo.c", "-Xclang"],
                Uncacheable::BadArguments("-Xclang needs a value".into()),
            ),
            (
                &["-c", "foo.c", "-x"],
                Uncacheable::BadArguments("-x needs a value".into()),
            ),
            (
                &["-c", "foo.c", "-MF"],
                Uncacheable::BadArguments("-MF needs a value".into()),
            ),
            (
                &["-c", "foo.c", "-fdiagnostics-color=sometimes"],
                Uncacheable::BadArguments(
                    "-fdiagnostics-color=sometimes: expected always, never or auto".into(),
                ),
            ),
            (&["-c", "x.h"], Uncacheable::PrecompiledHeader),
            (
                &["-x", "c++-header", "-c", "foo.c"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-o", "foo.gch"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-o", "foo.pch"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-include-pch", "x.pch"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-fpch-preprocess"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-emit-pch"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-include", "pch.h"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-includepch.h"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "--include=pch.h"],
                Uncacheable::PrecompiledHeader,
            ),
            (
                &["-c", "foo.c", "-include", "pchdir.h"],
                Uncacheable::PrecompiledHeader,
            ),
            (&["-c", "foo.c", "-fprofile-use"], Uncacheable::ProfileUse),
            (
                &["-c", "foo.c", "-fprofile-use=dir"],
                Uncacheable::ProfileUse,
            ),
            (
                &["-c", "foo.c", "-fprofile-instr-use=x"],
                Uncacheable::ProfileUse,
            ),
            (
                &["-c", "foo.c", "-fprofile-sample-use=x"],
                Uncacheable::ProfileUse,
            ),
            (&["-c", "foo.c", "-fauto-profile"], Uncacheable::ProfileUse),
            (
                &["-c", "foo.c", "-fbranch-probabilities"],
                Uncacheable::ProfileUse,
            ),
            (&["-c", "foo.c", "-"], Uncacheable::MultipleSourceFiles),
            (
                &["-x", "c", "-c", "-"],
                Uncacheable::UnsupportedOption("- (standard input)".into()),
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(
                gcc(args),
                Verdict::Uncacheable(expected.clone()),
                "{args:?}"
            );
        }
        assert_eq!(
            classify_with(CompilerFamily::Gcc, true, &["-c", "foo.c"]),
            Verdict::Uncacheable(Uncacheable::UnsupportedEnvironment)
        );
        // An output in an existing directory, an existing file and /dev/null are fine.
        for out in [
            "out/x.o",
            "/tmp/x.o",
            "out/existing.o",
            "/dev/null",
            "/x.o",
            "x.o",
        ] {
            job(&["-c", "foo.c", "-o", out]);
        }
        // The first problem found wins.
        assert_eq!(
            unsupported_opt(&["-c", "foo.c", "-save-temps", "-frepo"]),
            "-save-temps"
        );
    }

    #[test]
    fn too_hard_options_in_every_spelling() {
        let cases: &[(&[&str], &str)] = &[
            (&["-save-temps"], "-save-temps"),
            (&["-save-temps=obj"], "-save-temps=obj"),
            (&["--save-temps"], "--save-temps"),
            (&["-fdump-tree-all"], "-fdump-tree-all"),
            (&["-fdump-ipa-clones"], "-fdump-ipa-clones"),
            (&["-frepo"], "-frepo"),
            (&["-gtoggle"], "-gtoggle"),
            (&["-ftime-trace"], "-ftime-trace"),
            (&["-ftime-trace=x.json"], "-ftime-trace=x.json"),
            (&["-wrapper", "gdb"], "-wrapper"),
            (&["-MJ", "x.json"], "-MJ"),
            (&["-MJx.json"], "-MJx.json"),
            (&["-fmodules"], "-fmodules"),
            (&["-fmodules-ts"], "-fmodules-ts"),
            (&["-fmodule-header"], "-fmodule-header"),
            (&["-fmodule-header=user"], "-fmodule-header=user"),
            (&["-fprofile-dir=d"], "-fprofile-dir=d"),
            (&["-fprofile-note=x"], "-fprofile-note=x"),
            (&["-Wa,-adhln=x.lst"], "-Wa,-adhln=x.lst"),
            (&["-Wa,--noexecstack,-al"], "-Wa,--noexecstack,-al"),
            (&["-Xassembler", "-al"], "-Xassembler"),
            (
                &["--serialize-diagnostics", "x.dia"],
                "--serialize-diagnostics",
            ),
            (&["-Xclang", "-load"], "-Xclang"),
            (&["-fplugin=x.so"], "-fplugin=x.so"),
            (&["-fplugin-arg-x-y"], "-fplugin-arg-x-y"),
            (&["-specs=x"], "-specs=x"),
            (&["-specs", "x"], "-specs"),
            (&["--specs=x"], "--specs=x"),
            (&["--specs", "x"], "--specs"),
            (&["-B", "dir"], "-B"),
            (&["-Bdir"], "-Bdir"),
            (&["-###"], "-###"),
            (&["-fsanitize-ignorelist=x"], "-fsanitize-ignorelist=x"),
            (&["-fsanitize-blacklist=x"], "-fsanitize-blacklist=x"),
            (&["-gsplit-dwarf=single"], "-gsplit-dwarf=single"),
            (&["-Wp,-MF,x"], "-Wp,-MF,x"),
            (&["-Wp,-P"], "-Wp,-P"),
            (&["-Xpreprocessor", "-MD"], "-Xpreprocessor -MD"),
            (&["-M", "-MD"], "-M"),
            (&["-MD", "-Wp,-MMD,x.d"], "-Wp,-MMD,x.d"),
            (&["-Wp,-MD,x.d", "-MF", "y.d"], "-Wp,-MD,x.d"),
            (&["-dumpbase", "x"], "-dumpbase"),
            (&["-fopt-info-all=x"], "-fopt-info-all=x"),
        ];
        for (extra, name) in cases {
            let mut args = vec!["-c", "foo.c"];
            args.extend_from_slice(extra);
            assert_eq!(unsupported_opt(&args), *name, "{args:?}");
        }
    }

    #[test]
    fn languages_from_extension_per_family() {
        let cases: &[(&str, Option<Language>, Option<Language>)] = &[
            ("foo.c", Some(Language::C), Some(Language::C)),
            ("x.cpp", Some(Language::Cxx), Some(Language::Cxx)),
            ("x.CXX", None, Some(Language::Cxx)),
            ("x.sx", Some(Language::AsmWithCpp), None),
            (
                "x.S",
                Some(Language::AsmWithCpp),
                Some(Language::AsmWithCpp),
            ),
            ("x.s", Some(Language::Asm), Some(Language::Asm)),
            ("x.i", Some(Language::CppOutput), Some(Language::CppOutput)),
            (
                "x.ii",
                Some(Language::CxxCppOutput),
                Some(Language::CxxCppOutput),
            ),
            ("x.m", Some(Language::ObjC), Some(Language::ObjC)),
            ("x.mm", Some(Language::ObjCxx), Some(Language::ObjCxx)),
        ];
        for (input, g, c) in cases {
            for (family, expected) in [(CompilerFamily::Gcc, g), (CompilerFamily::Clang, c)] {
                match (classify_with(family, false, &["-c", input]), expected) {
                    (Verdict::Cacheable(job), Some(lang)) => assert_eq!(job.language, *lang),
                    (Verdict::Uncacheable(Uncacheable::UnsupportedLanguage(_)), None) => {}
                    (other, _) => panic!("{family:?} {input}: {other:?}"),
                }
            }
        }
        assert_eq!(
            clang(&["-c", "x.hpp"]),
            Verdict::Uncacheable(Uncacheable::PrecompiledHeader)
        );
    }

    #[test]
    fn language_from_x() {
        assert_eq!(job(&["-x", "c++", "-c", "foo.c"]).language, Language::Cxx);
        assert_eq!(job(&["-xc++", "-c", "foo.c"]).language, Language::Cxx);
        assert_eq!(job(&["-x", "c", "-c", "src/foo"]).language, Language::C);
        assert_eq!(
            job(&["-x", "assembler", "-x", "none", "-c", "foo.c"]).language,
            Language::C
        );
        assert_eq!(
            job(&["-x", "c", "-x", "c++", "-c", "foo.c"]).language,
            Language::Cxx
        );
        // -x after the input does not apply to it.
        assert_eq!(job(&["-c", "foo.c", "-x", "c++"]).language, Language::C);
        // -xHost is an ordinary option, kept in the key.
        let j = job(&["-xHost", "-c", "foo.c"]);
        assert_eq!(j.language, Language::C);
        assert!(j.key_args.contains(&"-xHost".to_string()));
        for lang in [
            "c",
            "c++",
            "objective-c",
            "objective-c++",
            "assembler-with-cpp",
            "assembler",
            "cpp-output",
            "c++-cpp-output",
        ] {
            assert_eq!(job(&["-x", lang, "-c", "foo.c"]).language.as_x_arg(), lang);
        }
    }

    #[test]
    fn primary_output_names() {
        let cases: &[(&[&str], &str)] = &[
            (&["-c", "foo.c"], "foo.o"),
            (&["-c", "src/foo.c"], "foo.o"),
            (&["-c", "src/foo.c.c"], "foo.c.o"),
            (&["-x", "c", "-c", "src/foo"], "foo.o"),
            (&["-S", "foo.c"], "foo.s"),
            (&["-c", "-S", "foo.c"], "foo.s"),
            (&["-S", "-c", "foo.c"], "foo.s"),
            (&["-c", "foo.c", "-o", "out/x.o"], "out/x.o"),
            (&["-c", "foo.c", "-oout/x.o"], "out/x.o"),
            (&["-c", "foo.c", "-o", "a.o", "-o", "out/b.o"], "out/b.o"),
            (&["-x", "c", "-c", ".c"], ".c.o"),
        ];
        for (args, expected) in cases {
            let j = job(args);
            assert_eq!(
                j.outputs[0],
                Output {
                    kind: Primary,
                    path: expected.to_string()
                },
                "{args:?}"
            );
        }
        assert_eq!(
            job_of(clang(&["-x", "c", "-c", ".c"])).outputs[0].path,
            ".o"
        );
        let syntax = job(&["-fsyntax-only", "-c", "foo.c", "-o", "out/x.o"]);
        assert_eq!(syntax.mode, CompileMode::SyntaxOnly);
        assert!(syntax.outputs.is_empty());
        assert_eq!(job(&["-c", "foo.c"]).mode, CompileMode::Object);
        assert_eq!(job(&["-S", "foo.c"]).mode, CompileMode::Assembly);
    }

    #[test]
    fn dependency_files() {
        let dep = |args: &[&str]| -> Option<String> {
            job(args)
                .outputs
                .iter()
                .find(|o| o.kind == Dependency)
                .map(|o| o.path.clone())
        };
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["-MD", "-c", "foo.c"], Some("foo.d")),
            (&["-MMD", "-c", "src/foo.c"], Some("foo.d")),
            (
                &["-MD", "-c", "foo.c", "-o", "out/a.b.o"],
                Some("out/a.b.d"),
            ),
            (&["-MD", "-c", "foo.c", "-o", "out/ab"], Some("out/ab.d")),
            (&["-MD", "-c", "foo.c", "-o", "out/.hidden"], Some("out/.d")),
            (&["-MD", "-S", "foo.c", "-o", "out/q.s"], Some("out/q.d")),
            (&["-MD", "-MF", "out/m.d", "-c", "foo.c"], Some("out/m.d")),
            (&["-MD", "-MFout/m.d", "-c", "foo.c"], Some("out/m.d")),
            (
                &["-MD", "-MF", "a.d", "-MF", "b.d", "-c", "foo.c"],
                Some("b.d"),
            ),
            (&["-Wp,-MD,out/w.d", "-c", "foo.c"], Some("out/w.d")),
            (
                &["-Wp,-MMD,out/w.d", "-MMD", "-c", "foo.c"],
                Some("out/w.d"),
            ),
            (&["-MD", "-MF", "/dev/null", "-c", "foo.c"], None),
            (&["-MD", "-c", "x.s"], None),
            (&["-MD", "-c", "x.i"], None),
            (&["-MD", "-c", "x.S"], Some("x.d")),
            (&["-MF", "a.d", "-c", "foo.c"], None),
            (&["-c", "foo.c"], None),
        ];
        for (args, expected) in cases {
            assert_eq!(dep(args).as_deref(), *expected, "{args:?}");
        }
        assert_eq!(unsupported_opt(&["-MD", "-fsyntax-only", "foo.c"]), "-MD");
        assert_eq!(
            unsupported_opt(&["-MD", "-c", "foo.c", "-o", "/dev/null"]),
            "-MD"
        );
        // -MD -o x.o.d: the object and the dependency file collide [measured].
        assert_eq!(
            gcc(&["-MD", "-c", "foo.c", "-o", "out/a.o.d"]),
            Verdict::Uncacheable(Uncacheable::BadOutputFile("out/a.o.d".into()))
        );
    }

    #[test]
    fn dependency_args_reproduce_the_compile() {
        assert_eq!(
            job(&["-MD", "-c", "foo.c", "-o", "out/a.o"]).dependency_args,
            strings(&["-MD", "-MQ", "out/a.o", "-MF", "out/a.d"])
        );
        assert_eq!(
            job(&["-MMD", "-MP", "-MT", "t1", "-MQ", "t$2", "-MG", "-c", "foo.c"]).dependency_args,
            strings(&["-MMD", "-MP", "-MG", "-MT", "t1", "-MQ", "t$2", "-MF", "foo.d"])
        );
        assert_eq!(
            job(&["-MD", "-MTt", "-c", "foo.c"]).dependency_args[1..3],
            strings(&["-MT", "t"])
        );
        // gcc names the target after the source for a lone -Wp,-MD; clang uses the output.
        let wp = ["-Wp,-MD,out/w.d", "-c", "src/foo.c", "-o", "out/a.o"];
        assert_eq!(
            job(&wp).dependency_args,
            strings(&["-MD", "-MQ", "foo.o", "-MF", "out/w.d"])
        );
        assert_eq!(
            job_of(clang(&wp)).dependency_args,
            strings(&["-MD", "-MQ", "out/a.o", "-MF", "out/w.d"])
        );
        assert_eq!(
            job(&["-Wp,-MMD,out/w.d", "-MMD", "-c", "foo.c", "-o", "out/a.o"]).dependency_args,
            strings(&["-MMD", "-MQ", "out/a.o", "-MF", "out/w.d"])
        );
        assert!(job(&["-c", "foo.c"]).dependency_args.is_empty());
        assert!(job(&["-MD", "-MF", "/dev/null", "-c", "foo.c"])
            .dependency_args
            .is_empty());
    }

    #[test]
    fn side_outputs_follow_measured_rules() {
        let o = "out/a.b.o";
        let with = |family, extra: &[&str]| {
            let mut args = vec!["-c", "foo.c", "-o", o];
            args.extend_from_slice(extra);
            let j = job_of(classify_with(family, false, &args));
            j.outputs
                .iter()
                .skip(1)
                .map(|o| (o.kind, o.path.clone()))
                .collect::<Vec<_>>()
        };
        use CompilerFamily::{Clang, Gcc};
        let dwo = vec![(SplitDwarf, "out/a.b.dwo".to_string())];
        assert_eq!(with(Gcc, &["-gsplit-dwarf"]), dwo);
        assert_eq!(with(Gcc, &["-gsplit-dwarf", "-g0"]), dwo);
        assert_eq!(with(Gcc, &["-g", "-gsplit-dwarf", "-flto"]), dwo);
        assert_eq!(
            with(Gcc, &["-gsplit-dwarf", "-gno-split-dwarf", "-g"]),
            vec![]
        );
        assert_eq!(with(Clang, &["-gsplit-dwarf"]), vec![]);
        assert_eq!(with(Clang, &["-gsplit-dwarf", "-g"]), dwo);
        assert_eq!(with(Clang, &["-g", "-gsplit-dwarf", "-g0"]), vec![]);
        assert_eq!(with(Clang, &["-g", "-gsplit-dwarf", "-flto"]), vec![]);
        assert_eq!(
            with(Clang, &["-g", "-gsplit-dwarf", "-flto", "-fno-lto"]),
            dwo
        );
        assert_eq!(
            unsupported_opt(&["-gsplit-dwarf", "-g", "-S", "foo.c"]),
            "-gsplit-dwarf"
        );
        assert_eq!(
            unsupported_opt(&["-gsplit-dwarf", "-c", "foo.c", "-o", "/dev/null"]),
            "-gsplit-dwarf"
        );

        let gcno = vec![(CoverageNotes, "out/a.b.gcno".to_string())];
        assert_eq!(with(Gcc, &["--coverage"]), gcno);
        assert_eq!(with(Clang, &["-ftest-coverage", "-flto"]), gcno);
        assert_eq!(
            with(Gcc, &["-ftest-coverage", "-fno-test-coverage"]),
            vec![]
        );
        assert_eq!(with(Gcc, &["-fprofile-arcs"]), vec![]);
        assert_eq!(
            outputs_of(&job(&["--coverage", "-S", "foo.c"]))[1],
            (CoverageNotes, "foo.gcno")
        );

        let su = vec![(StackUsage, "out/a.b.su".to_string())];
        assert_eq!(with(Gcc, &["-fstack-usage"]), su);
        assert_eq!(with(Gcc, &["-fstack-usage", "-flto"]), vec![]);
        assert_eq!(with(Clang, &["-fstack-usage", "-flto=thin"]), vec![]);
        assert_eq!(with(Gcc, &["-fstack-usage", "-flto", "-fno-lto"]), su);
        assert_eq!(with(Gcc, &["-fstack-usage", "-fno-stack-usage"]), vec![]);
        assert_eq!(
            with(Gcc, &["-fcallgraph-info"]),
            vec![(CallGraphInfo, "out/a.b.ci".to_string())]
        );
        assert_eq!(with(Gcc, &["-fcallgraph-info=su", "-flto"]), vec![]);
        assert_eq!(
            outputs_of(&job(&["-fstack-usage", "-S", "foo.c", "-o", "out/a"]))[1],
            (StackUsage, "out/a.su")
        );
        assert_eq!(
            unsupported_opt(&["-fstack-usage", "-fsyntax-only", "foo.c"]),
            "-fstack-usage"
        );
        assert_eq!(
            unsupported_opt(&["--coverage", "-c", "foo.c", "-o", "/dev/null"]),
            "--coverage"
        );

        // Everything at once, primary first.
        let all = job(&[
            "-MD",
            "-gsplit-dwarf",
            "--coverage",
            "-fstack-usage",
            "-fcallgraph-info",
            "-c",
            "foo.c",
        ]);
        assert_eq!(
            outputs_of(&all),
            vec![
                (Primary, "foo.o"),
                (Dependency, "foo.d"),
                (SplitDwarf, "foo.dwo"),
                (CoverageNotes, "foo.gcno"),
                (StackUsage, "foo.su"),
                (CallGraphInfo, "foo.ci"),
            ]
        );
    }

    #[test]
    fn remote_args_keep_only_what_the_compile_of_the_preprocessed_text_needs() {
        let j = job(&[
            "-O2",
            "-DX=1",
            "-Iinc",
            "-include",
            "pre.h",
            "-x",
            "c",
            "-c",
            "src/foo.c",
            "-o",
            "out/a.o",
            "-MD",
            "-MF",
            "a.d",
            "-MT",
            "t",
            "-MP",
            "-Wp,-DY",
            "-Wall",
            "-g",
            "-fdiagnostics-color=always",
            "-Wa,--noexecstack",
            "-std=c99",
        ]);
        assert_eq!(
            j.remote_args,
            strings(&["-O2", "-Wall", "-g", "-Wa,--noexecstack", "-std=c99"])
        );
        // -Wp,-DY shapes the macros in a way only the preprocessor sees.
        assert_eq!(j.macro_args, None);
    }

    #[test]
    fn macro_args_are_the_definitions_in_order_or_none() {
        let j = job(&[
            "-DX=1",
            "-D",
            "Y",
            "-UZ",
            "--define-macro=W=2",
            "--undefine-macro",
            "V",
            "-Iinc",
            "-include",
            "pre.h",
            "-Wp,-MD,a.d",
            "-c",
            "a.c",
        ]);
        assert_eq!(
            j.macro_args,
            Some(strings(&["-DX=1", "-DY", "-UZ", "-DW=2", "-UV"]))
        );
        assert_eq!(job(&["-c", "a.c"]).macro_args, Some(vec![]));
        for other in [
            &["-imacros", "m.h"][..],
            &["-Ax=y"],
            &["-Xpreprocessor", "-DX"],
            &["-Wp,-DX"],
        ] {
            let args = [other, &["-c", "a.c"][..]].concat();
            assert_eq!(job(&args).macro_args, None, "{other:?}");
        }
    }

    #[test]
    fn preprocess_args_drop_compile_only_options_in_order() {
        let j = job(&[
            "-Werror",
            "-rdynamic",
            "-O2",
            "-DX=1",
            "-c",
            "-o",
            "out/a.o",
            "-MD",
            "-MMD",
            "-MF",
            "d",
            "-MT",
            "t",
            "-MQ",
            "q",
            "-MP",
            "-MG",
            "-Wa,--noexecstack",
            "-Wl,-z",
            "-Xassembler",
            "--gdwarf",
            "-Xlinker",
            "-x",
            "-fdiagnostics-color=always",
            "-fcolor-diagnostics",
            "-fno-color-diagnostics",
            "-fno-diagnostics-color",
            "-fdiagnostics-color",
            "-I",
            "inc",
            "-Wp,-DY",
            "-x",
            "c",
            "foo.c",
            "-v",
            "-P",
            "-Lx",
            "-lm",
            "-Wno-error",
            "-std=c11",
        ]);
        assert_eq!(
            j.preprocess_args,
            strings(&[
                "-O2", "-DX=1", "-I", "inc", "-Wp,-DY", "-x", "c", "foo.c", "-std=c11", "-E"
            ])
        );
        assert_eq!(
            job(&["-Wp,-MD,w.d", "-c", "foo.c", "-Wp,-MMD,w.d"]).preprocess_args,
            strings(&["foo.c", "-E"])
        );
        assert_eq!(
            job(&["-S", "-fsyntax-only", "foo.c"]).preprocess_args,
            strings(&["foo.c", "-E"])
        );
        for input in ["x.s", "x.i", "x.ii"] {
            assert!(job(&["-c", input]).preprocess_args.is_empty());
        }
        assert_eq!(job(&["-c", "x.S"]).preprocess_args, strings(&["x.S", "-E"]));
    }

    #[test]
    fn a_recorded_command_line_keys_preprocessor_options_too() {
        for record in ["-frecord-gcc-switches", "-grecord-command-line"] {
            let key = job(&["-c", "foo.c", "-DX=1", "-Iinc", record]).key_args;
            assert!(key.contains(&"-DX=1".to_string()), "{record}: {key:?}");
            assert!(key.contains(&"-Iinc".to_string()), "{record}: {key:?}");
        }
        let key = job(&[
            "-c",
            "foo.c",
            "-DX=1",
            "-grecord-command-line",
            "-gno-record-command-line",
        ])
        .key_args;
        assert!(!key.contains(&"-DX=1".to_string()), "{key:?}");
    }

    #[test]
    fn key_args_drop_preprocessor_only_options_in_every_spelling() {
        let cpp_only: &[&[&str]] = &[
            &["-DX"],
            &["-D", "X"],
            &["-UX"],
            &["-U", "X"],
            &["-Idir"],
            &["-I", "dir"],
            &["-include", "pre.h"],
            &["-includepre.h"],
            &["--include", "pre.h"],
            &["--include=pre.h"],
            &["-imacros", "m.h"],
            &["--imacros=m.h"],
            &["-isystem", "d"],
            &["-isystemd"],
            &["-iquote", "d"],
            &["-idirafter", "d"],
            &["-isysroot", "d"],
            &["-iprefix", "p"],
            &["-iwithprefix", "d"],
            &["-iwithprefixbefore", "d"],
            &["-nostdinc"],
            &["-nostdinc++"],
            &["-Wp,-DX"],
            &["-Wp,-UX,-DY"],
            &["-Xpreprocessor", "-fopenmp"],
            &["--include-directory=d"],
            &["--define-macro", "X"],
            &["-fdiagnostics-color"],
            &["-fno-color-diagnostics"],
            &["-MF", "x.d"],
            &["-MFx.d"],
        ];
        for extra in cpp_only {
            let mut args = vec!["-c", "foo.c"];
            args.extend_from_slice(extra);
            assert_eq!(job(&args).key_args, strings(&["-x", "c", "-c"]), "{args:?}");
        }
        // Output and targets only when the result names them.
        assert_eq!(
            job(&["-c", "foo.c", "-o", "out/a.o"]).key_args,
            strings(&["-x", "c", "-c"])
        );
        assert_eq!(
            job(&["-c", "foo.c", "-MT", "t"]).key_args,
            strings(&["-x", "c", "-c"])
        );
        assert_eq!(
            job(&[
                "-MMD",
                "-MP",
                "-c",
                "foo.c",
                "-oout/a.o",
                "-MTt",
                "-MF",
                "x.d"
            ])
            .key_args,
            strings(&["-x", "c", "-c", "-MMD", "-MP", "-o", "out/a.o", "-MT", "t"])
        );
        assert_eq!(
            job(&["-Wp,-MD,w.d", "-c", "foo.c", "-o", "out/a.o"]).key_args,
            strings(&["-x", "c", "-c", "-Wp,-MD", "-o", "out/a.o"])
        );
        for extra in [
            ["-gsplit-dwarf"],
            ["-fprofile-arcs"],
            ["--coverage"],
            ["-ftest-coverage"],
            ["-fprofile-generate"],
        ] {
            let mut args = vec!["-c", "foo.c", "-o", "out/a.o"];
            args.extend_from_slice(&extra);
            let key = job(&args).key_args;
            assert!(
                key.windows(2).any(|w| w == ["-o", "out/a.o"]),
                "{args:?}: {key:?}"
            );
        }
        // Mode and language mark the key.
        assert_eq!(job(&["-S", "foo.c"]).key_args, strings(&["-x", "c", "-S"]));
        assert_eq!(
            job(&["-fsyntax-only", "foo.c"]).key_args,
            strings(&["-x", "c", "-fsyntax-only"])
        );
        assert_eq!(
            job(&["-x", "c++", "-c", "foo.c"]).key_args,
            strings(&["-x", "c++", "-c"])
        );
        // Everything else stays, in order.
        assert_eq!(
            job(&[
                "-O2",
                "-c",
                "-Wall",
                "foo.c",
                "-Werror",
                "-Wa,-mx",
                "unknown-word",
                "-march=native"
            ])
            .key_args,
            strings(&[
                "-x",
                "c",
                "-c",
                "-O2",
                "-Wall",
                "-Werror",
                "-Wa,-mx",
                "unknown-word",
                "-march=native"
            ])
        );
    }

    #[test]
    fn cwd_in_key_for_debug_and_profiling() {
        let cases: &[(&[&str], bool)] = &[
            (&[], false),
            (&["-g"], true),
            (&["-g3"], true),
            (&["-ggdb3"], true),
            (&["-gdwarf-4"], true),
            (&["-gline-tables-only"], true),
            (&["-g", "-g0"], false),
            (&["-g0", "-g"], true),
            (&["-gz"], false),
            (&["-g", "-gz"], true),
            (&["-gno-column-info"], false),
            (&["-g", "-fdebug-prefix-map=/a=b"], true),
            (&["--coverage"], true),
            (&["-fprofile-arcs"], true),
            (&["-fprofile-generate=d"], true),
            (&["-fcoverage-mapping"], true),
        ];
        for (extra, expected) in cases {
            let mut args = vec!["-c", "foo.c"];
            args.extend_from_slice(extra);
            assert_eq!(job(&args).key_includes_cwd, *expected, "{args:?}");
        }
    }

    #[test]
    fn colour_choice_and_recorded_command_line() {
        let cases: &[(&[&str], ColorChoice)] = &[
            (&[], ColorChoice::Auto),
            (&["-fdiagnostics-color"], ColorChoice::Always),
            (&["-fdiagnostics-color=always"], ColorChoice::Always),
            (&["-fdiagnostics-color=never"], ColorChoice::Never),
            (
                &["-fdiagnostics-color=always", "-fdiagnostics-color=auto"],
                ColorChoice::Auto,
            ),
            (&["-fno-diagnostics-color"], ColorChoice::Never),
            (&["-fcolor-diagnostics"], ColorChoice::Always),
            (
                &["-fcolor-diagnostics", "-fno-color-diagnostics"],
                ColorChoice::Never,
            ),
        ];
        for (extra, expected) in cases {
            let mut args = vec!["-c", "foo.c"];
            args.extend_from_slice(extra);
            assert_eq!(job(&args).color, *expected, "{args:?}");
        }
        let records: &[(&[&str], bool)] = &[
            (&[], false),
            (&["-frecord-gcc-switches"], true),
            (
                &["-frecord-gcc-switches", "-fno-record-gcc-switches"],
                false,
            ),
            (&["-frecord-command-line"], true),
            (&["-grecord-command-line"], true),
            (
                &["-grecord-gcc-switches", "-gno-record-gcc-switches"],
                false,
            ),
            (&["-frecord-gcc-switches", "-gno-record-command-line"], true),
        ];
        for (extra, expected) in records {
            let mut args = vec!["-c", "foo.c"];
            args.extend_from_slice(extra);
            assert_eq!(job(&args).records_command_line, *expected, "{args:?}");
        }
    }

    #[test]
    fn distributability() {
        assert_eq!(job(&["-c", "foo.c", "-O2"]).distributable, Ok(()));
        assert_eq!(
            job(&["-fsyntax-only", "foo.c"]).distributable,
            Err(NotDistributable::SyntaxOnly)
        );
        assert_eq!(
            job(&["-c", "x.s"]).distributable,
            Err(NotDistributable::Language(Language::Asm))
        );
        assert_eq!(
            job(&["-c", "x.S"]).distributable,
            Err(NotDistributable::Language(Language::AsmWithCpp))
        );
        for opt in [
            "-fprofile-arcs",
            "-fprofile-generate",
            "-ftest-coverage",
            "--coverage",
            "-fprofile-update=atomic",
            "-march=native",
            "-mcpu=native",
            "-mtune=native",
            "-gsplit-dwarf",
            "-v",
        ] {
            assert_eq!(
                job(&["-c", "foo.c", opt]).distributable,
                Err(NotDistributable::LocalOption(opt.to_string())),
                "{opt}"
            );
        }
    }

    #[test]
    fn reasons_and_messages() {
        let nc = [
            (NotCompile::Link, "called_for_link"),
            (NotCompile::Preprocess, "called_for_preprocessing"),
            (NotCompile::DependenciesOnly, "dependencies_only"),
            (NotCompile::NoInput, "no_input_file"),
            (NotCompile::ConfigureProbe, "autoconf_test"),
        ];
        for (v, key) in nc {
            assert_eq!(v.reason(), key);
            assert!(!v.to_string().is_empty());
        }
        let un = [
            (
                Uncacheable::MultipleSourceFiles,
                "multiple_source_files",
                "",
            ),
            (Uncacheable::OutputToStdout, "output_to_stdout", "-o -"),
            (
                Uncacheable::UnsupportedLanguage(".f".into()),
                "unsupported_source_language",
                ".f",
            ),
            (
                Uncacheable::UnsupportedOption("-save-temps".into()),
                "unsupported_compiler_option",
                "-save-temps",
            ),
            (
                Uncacheable::BadOutputFile("out/x.o".into()),
                "bad_output_file",
                "out/x.o",
            ),
            (
                Uncacheable::BadArguments("-I needs a value".into()),
                "bad_compiler_arguments",
                "-I",
            ),
            (
                Uncacheable::UnsupportedEnvironment,
                "unsupported_environment_variable",
                "DEPENDENCIES_OUTPUT",
            ),
            (
                Uncacheable::PrecompiledHeader,
                "could_not_use_precompiled_header",
                "precompiled",
            ),
            (Uncacheable::ProfileUse, "profile_use", "-fprofile-use"),
            (Uncacheable::NonUtf8Argument, "non_utf8_argument", "UTF-8"),
        ];
        for (v, key, mentions) in un {
            assert_eq!(v.reason(), key);
            assert!(v.to_string().contains(mentions), "{v}");
        }
        let nd = [
            (
                NotDistributable::LocalOption("-fplugin=x".into()),
                "local_only_option",
                "-fplugin=x",
            ),
            (NotDistributable::SyntaxOnly, "syntax_only", "-fsyntax-only"),
            (
                NotDistributable::Language(Language::Asm),
                "local_only_language",
                "assembler",
            ),
        ];
        for (v, key, mentions) in nd {
            assert_eq!(v.reason(), key);
            assert!(v.to_string().contains(mentions), "{v}");
        }
    }

    #[test]
    fn file_name_helpers() {
        assert_eq!(replace_extension("out/a.b.o", ".d"), "out/a.b.d");
        assert_eq!(replace_extension("out.dir/a", ".d"), "out.dir/a.d");
        assert_eq!(replace_extension("out/.hidden", ".d"), "out/.d");
        assert_eq!(replace_extension("a", ".d"), "a.d");
        assert_eq!(
            default_output("src/foo.", ".o", CompilerFamily::Gcc),
            "foo.o"
        );
        assert_eq!(
            lookup("-iwithprefixbeforedir").map(|o| o.name),
            Some("-iwithprefixbefore")
        );
        assert_eq!(lookup("-include-pch").map(|o| o.name), Some("-include-pch"));
        assert_eq!(
            lookup("-fprofile-use=x").map(|o| o.name),
            Some("-fprofile-use")
        );
        assert_eq!(lookup("-flto-partition=none").map(|o| o.name), None);
        assert_eq!(CompilerFamily::from_name("clang-14"), CompilerFamily::Clang);
        assert_eq!(
            CompilerFamily::from_name("x86_64-linux-gnu-gcc-12"),
            CompilerFamily::Gcc
        );
    }

    /// Tokens for generated argument lists: options of every kind, values, files and non-files.
    const VOCABULARY: &[&str] = &[
        "-c",
        "-S",
        "-E",
        "-fsyntax-only",
        "-o",
        "-oout/x.o",
        "-x",
        "c",
        "c++",
        "none",
        "-xHost",
        "-M",
        "-MM",
        "-MD",
        "-MMD",
        "-MF",
        "-MFd.d",
        "-MT",
        "-MQ",
        "-MP",
        "-Wp,-MD,w.d",
        "-Wp,-DX",
        "-D",
        "-DX",
        "-I",
        "-include",
        "-g",
        "-g0",
        "-gsplit-dwarf",
        "--coverage",
        "-fstack-usage",
        "-flto",
        "-save-temps",
        "-fdiagnostics-color=always",
        "-fdiagnostics-color=",
        "-Xclang",
        "-Wa,-al",
        "-march=native",
        "-",
        "@rsp",
        "foo.c",
        "src/foo.c",
        "a.c",
        "x.s",
        "x.i",
        "x.h",
        "x.ccc",
        "out",
        "out/a.o",
        "missing/a.o",
        "/dev/null",
        "conftest.c",
        "",
        "-O2",
        "-Werror",
    ];

    proptest! {
        #[test]
        fn classify_never_panics_and_keeps_its_promises(
            picks in proptest::collection::vec(0..VOCABULARY.len(), 0..14),
            clang_family in any::<bool>(),
        ) {
            let args: Vec<&str> = picks.iter().map(|&i| VOCABULARY[i]).collect();
            let family = if clang_family { CompilerFamily::Clang } else { CompilerFamily::Gcc };
            if let Verdict::Cacheable(job) = classify_with(family, false, &args) {
                let occurrences = args.iter().filter(|a| **a == job.input).count();
                if job.language.needs_preprocessing() {
                    prop_assert_eq!(job.preprocess_args.last().map(String::as_str), Some("-E"));
                    let in_cpp = job.preprocess_args.iter().filter(|a| **a == job.input).count();
                    prop_assert!(in_cpp >= 1);
                    if occurrences == 1 {
                        prop_assert_eq!(in_cpp, 1);
                    }
                } else {
                    prop_assert!(job.preprocess_args.is_empty());
                }
                if occurrences == 1 {
                    prop_assert!(!job.key_args.contains(&job.input));
                }
                prop_assert_eq!(job.outputs.is_empty(), job.mode == CompileMode::SyntaxOnly);
            }
        }

        #[test]
        fn classify_never_panics_on_arbitrary_strings(args in proptest::collection::vec(".{0,12}", 0..10)) {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = gcc(&refs);
            let _ = clang(&refs);
        }
    }
}
