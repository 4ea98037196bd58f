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
    /// Whether the compiler records its own command line in the output
    /// (`-frecord-gcc-switches`, `-grecord-command-line`): then no colour flag may be added.
    pub records_command_line: bool,
    /// `Ok` when the compile could run on another machine, else why not.
    pub distributable: Result<(), NotDistributable>,
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
