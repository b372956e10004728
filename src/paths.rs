//! Paths given by a user made absolute, lexically, so that what locksup
//! records and prints (lock metadata, events, `status --json` keys) does
//! not depend on how a path was typed: `.`, `./x`, `dir//x` and `dir/x/`
//! all come out the same.
//!
//! Nothing is read from the file system: a session file need not exist,
//! and symbolic links are not resolved. So `..` is resolved only where
//! doing it lexically is exact: right after `/`, and at the start of a
//! relative path, against the working directory (which the kernel reports
//! without symbolic links). A `..` after a component the user named is
//! kept: that component may be a symbolic link, whose `..` is not the
//! directory before it in the text.

use std::path::{Component, Path, PathBuf};

/// `path` made absolute against the working directory and normalised as
/// [`absolute_in`] does. When the working directory cannot be read, the
/// path is only normalised.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    match std::env::current_dir() {
        Ok(cwd) => absolute_in(&cwd, path),
        Err(_) => absolute_in(Path::new(""), path),
    }
}

/// `path` made absolute against `cwd` (a directory as `getcwd(3)` reports
/// it) and normalised: `.` components and repeated or trailing slashes
/// dropped, `..` resolved where that is exact (see the module's
/// documentation) and kept elsewhere.
pub(crate) fn absolute_in(cwd: &Path, path: &Path) -> PathBuf {
    let mut out = Normal {
        path: PathBuf::new(),
        exact: true,
    };
    if !path.has_root() {
        for c in cwd.components() {
            out.push(c);
        }
        out.exact = true;
    }
    for c in path.components() {
        out.push(c);
    }
    if out.path.as_os_str().is_empty() {
        out.path.push(".");
    }
    out.path
}

/// A path being normalised.
struct Normal {
    path: PathBuf,
    /// Whether `path` holds only directories known not to be symbolic
    /// links (the root, the working directory, their ancestors), so that
    /// `..` may be resolved by dropping the last component.
    exact: bool,
}

impl Normal {
    fn push(&mut self, c: Component<'_>) {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                self.path = PathBuf::from("/");
                self.exact = true;
            }
            Component::CurDir => {}
            Component::ParentDir if self.exact && self.path.parent().is_some() => {
                self.path.pop();
            }
            // `/..` is `/`.
            Component::ParentDir if self.exact && self.path.has_root() => {}
            Component::ParentDir => self.path.push(".."),
            Component::Normal(name) => {
                self.path.push(name);
                self.exact = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(path: &str) -> String {
        absolute_in(Path::new("/home/u/work"), Path::new(path))
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn dots_and_slashes_are_dropped() {
        assert_eq!(abs("."), "/home/u/work");
        assert_eq!(abs("./"), "/home/u/work");
        assert_eq!(abs("./x.lock"), "/home/u/work/x.lock");
        assert_eq!(abs("a//b/./c/"), "/home/u/work/a/b/c");
        assert_eq!(abs("/srv//s/./x.jsonl"), "/srv/s/x.jsonl");
        assert_eq!(abs("//srv/"), "/srv");
    }

    #[test]
    fn dot_dot_is_resolved_only_where_exact() {
        // Against the working directory, and right after the root.
        assert_eq!(abs(".."), "/home/u");
        assert_eq!(abs("../../x"), "/home/x");
        assert_eq!(abs("./../x"), "/home/u/x");
        assert_eq!(abs("../../../../x"), "/x");
        assert_eq!(abs("/../x"), "/x");
        // After a named component, which may be a symbolic link: kept.
        assert_eq!(abs("a/../x"), "/home/u/work/a/../x");
        assert_eq!(abs("/srv/a/../x"), "/srv/a/../x");
        assert_eq!(abs("../a/../x"), "/home/u/a/../x");
    }

    #[test]
    fn without_a_working_directory_only_normalises() {
        assert_eq!(
            absolute_in(Path::new(""), Path::new("./a//b")),
            Path::new("a/b")
        );
        assert_eq!(absolute_in(Path::new(""), Path::new(".")), Path::new("."));
        assert_eq!(
            absolute_in(Path::new(""), Path::new("../a")),
            Path::new("../a")
        );
    }
}
