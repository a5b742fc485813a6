/*
 * cfsctl's native scanner, fs-verity hasher and object writer (Node-API, C).
 *
 * The directory walk and the file hashing are the hot path of compute-id and
 * create-image. In JavaScript every entry costs several calls through Node's
 * fs bindings (readdir, a bigint lstat, listxattr, getxattr), each building
 * objects, and every 4096-byte block a call into node:crypto. Here one call
 * reads a whole directory, and one call hashes a batch of files.
 *
 *   scanDir(path, xattrMode, inlineMax, useCwd?) -> Buffer
 *     Every entry of the directory `path` (bytes), sorted by name bytes:
 *     u32 count, u32 offset of the tail, the entries (see encode_entry()),
 *     then the tail (names, symlink targets, small contents). xattrMode: 0
 *     none, 1 all, 2 `user.*` only. Regular files of 1..inlineMax bytes
 *     carry their content, symlinks their target. useCwd: see scan_dir().
 *   readXattrs(path, xattrMode) -> Buffer
 *     The xattrs of `path` itself, packed as in an entry.
 *   hashFiles(paths, ends, meta, algorithm, out) -> (string|null)[] | null
 *     fs-verity digests (4096-byte blocks, no salt; algorithm 1 = sha256,
 *     2 = sha512) of the files paths[ends[i-1]..ends[i]), written to `out`
 *     one after another. meta holds per file (size, st_ino, st_mtime in ms)
 *     as the walk saw them; a file that differs afterwards, or reads another
 *     size, is an error ("changed while it was read"). The result has one
 *     message per failed file, or is null when every file was hashed.
 *   hashFilesAsync(...) -> Promise: the same in a libuv thread.
 *   stopWrites()
 *     writeFile(s) create no file after this (the run was interrupted).
 *   setHashLimit(n) -> number
 *     At most n libuv threads hash batches at once (0: no limit), process-wide;
 *     returns the limit before. See hash_gate_enter().
 *   verityDigest(data, algorithm, out, at), hashBlocks(data, algorithm, out, at)
 *     The digest of bytes in memory; the hashes of whole blocks (a tree's
 *     first level, for the JavaScript hasher).
 *   writeFile(path, parts, chmod) -> Promise<boolean>, writeFiles(paths, parts, counts, chmod)
 *     Object files written in a libuv thread, one or many per job (see write_file()).
 *   enableVerity(fd, algorithm) -> string|null, measureVerity(fd, algorithm) -> Buffer|string
 *     Kernel fs-verity of an open file (FS_IOC_ENABLE_VERITY, 4096-byte
 *     blocks, no salt; FS_IOC_MEASURE_VERITY): null or the digest, else the
 *     errno name. What each error means is decided in src/repository/verity.ts.
 *   nameObjects(paths, verity, digests) -> Promise<{results, verityUnsupported}>
 *     Complete temporary object files given their final names in a libuv
 *     thread, fs-verity first where asked (see name_objects()).
 *   sha256Init(state), sha256Update(state, parts) -> Promise, sha256Final(state) -> Buffer
 *     Plain SHA-256 of a stream (layer blobs, diff_ids), its updates run in
 *     a libuv thread (see sha256_update()).
 *   useShaExtensions(on?) -> boolean
 *     Whether the CPU's SHA extensions hash 4096-byte blocks (tests turn
 *     them off to compare with OpenSSL).
 *
 * Each Node environment (the main thread, each worker) has its own read
 * buffer and tree state (instance data); libuv's threads have their own.
 * The SHA-2 functions are OpenSSL's, which the Node binary itself carries
 * and exports (resolved when the addon loads), and sha256_4k.c's.
 *
 * Errors of scanDir are thrown as Error objects with `code` (ENOENT…),
 * `syscall` and `entry` (the entry's name, a Buffer, absent for the
 * directory itself); `code` is "ECHANGED" for a file that read another size
 * than lstat gave.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

/*
 * OpenSSL's SHA-2, from the symbols the node binary (or the libcrypto it
 * links) exports; declared here rather than taken from headers, which not
 * every Node installation ships. The low-level calls, not EVP or the
 * one-shot SHA256(): those fetch an implementation on every call, which
 * measured 25% slower over 4096-byte blocks. The contexts are opaque here:
 * SHA256_CTX is 112 bytes and SHA512_CTX 216 in OpenSSL 1.1 and 3.x; 256
 * aligned bytes hold either. Where a Node build exports none of these, the
 * addon does not load and cfsctl uses its JavaScript paths.
 */
typedef struct {
  uint64_t opaque[32];
} sha_ctx_t;
extern int SHA256_Init(sha_ctx_t *c);
extern int SHA256_Update(sha_ctx_t *c, const void *data, size_t len);
extern int SHA256_Final(unsigned char *md, sha_ctx_t *c);
extern int SHA512_Init(sha_ctx_t *c);
extern int SHA512_Update(sha_ctx_t *c, const void *data, size_t len);
extern int SHA512_Final(unsigned char *md, sha_ctx_t *c);

#include "sha256_4k.h"

/* The x86 SHA extensions, where the CPU has them (sha256_4k.c); else OpenSSL for every block. */
static int use_sha_ext;

#define BLOCK 4096
#define MAX_LEVELS 16
#define READ_CHUNK (1 << 20)

/* ---------- growable output buffer ---------- */

typedef struct {
  uint8_t *p;
  size_t len, cap;
  int oom;
} out_t;

static int out_reserve(out_t *o, size_t n) {
  if (o->oom) return -1;
  if (o->len + n <= o->cap) return 0;
  size_t cap = o->cap ? o->cap : 65536;
  while (cap < o->len + n) cap *= 2;
  uint8_t *p = realloc(o->p, cap);
  if (!p) {
    o->oom = 1;
    return -1;
  }
  o->p = p;
  o->cap = cap;
  return 0;
}

static void put_u32(out_t *o, uint32_t v) {
  if (out_reserve(o, 4)) return;
  memcpy(o->p + o->len, &v, 4); /* x86-64 and arm64 are little-endian; checked at load */
  o->len += 4;
}

static void put_f64(out_t *o, double v) {
  if (out_reserve(o, 8)) return;
  memcpy(o->p + o->len, &v, 8);
  o->len += 8;
}

static void put_bytes(out_t *o, const void *b, size_t n) {
  if (n == 0 || out_reserve(o, n)) return; /* nothing to copy: b may be NULL */
  memcpy(o->p + o->len, b, n);
  o->len += n;
}

/* ---------- errors ---------- */

/* The errno's name ("ENOENT"), as Node's errors carry it in `code`. */
static const char *errno_code(int e) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *n = strerrorname_np(e);
  if (n) return n;
#endif
  /* Other C libraries (musl): the names cfsctl's messages know. */
  switch (e) {
#define NAME(x) \
  case x:       \
    return #x;
    NAME(ENOENT) NAME(EACCES) NAME(EPERM) NAME(ENOTDIR) NAME(EISDIR) NAME(EEXIST) NAME(ENOSPC) NAME(EROFS)
    NAME(ELOOP) NAME(ENAMETOOLONG) NAME(EIO) NAME(EOPNOTSUPP) NAME(EINVAL) NAME(EBUSY) NAME(ENODATA) NAME(ENOMEM)
    NAME(EMFILE) NAME(ENFILE) NAME(EBADF) NAME(EINTR) NAME(EAGAIN) NAME(EXDEV) NAME(EFBIG) NAME(EOVERFLOW)
    NAME(ESTALE) NAME(EDQUOT) NAME(ERANGE) NAME(E2BIG) NAME(ENOTTY) NAME(EMLINK) NAME(ETXTBSY) NAME(ENOSYS)
#undef NAME
  }
  return "EIO";
}

/* Error{code, syscall}, message "<code> (<syscall>)", as Node's system errors carry them. */
static napi_value sys_error(napi_env env, const char *code, const char *syscall) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s (%s)", code, syscall);
  napi_value m, c, err, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
  napi_create_error(env, c, m, &err);
  napi_set_named_property(env, err, "code", c);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  return err;
}

/* Throw sys_error(code, syscall), with `entry` (a Buffer) when one is named. */
static void throw_sys(napi_env env, const char *code, const char *syscall, const char *entry) {
  napi_value err = sys_error(env, code, syscall), v;
  if (entry) {
    napi_create_buffer_copy(env, strlen(entry), entry, NULL, &v);
    napi_set_named_property(env, err, "entry", v);
  }
  napi_throw(env, err);
}

/*
 * Queue `data` as async work named `name` (execute in a libuv thread,
 * complete on the JavaScript thread); *deferred is what complete settles.
 * Returns the promise.
 */
static napi_value queue_job(napi_env env, const char *name, napi_async_execute_callback execute,
                            napi_async_complete_callback complete, void *data, napi_async_work *work, napi_deferred *deferred) {
  napi_value promise, n;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &n);
  napi_create_async_work(env, NULL, n, execute, complete, data, work);
  napi_queue_async_work(env, *work);
  return promise;
}

/* ---------- directory scan ---------- */

static int cmp_names(const void *a, const void *b) {
  /* strcmp compares as unsigned char: byte order. */
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Open a directory by path; a path longer than the kernel takes is opened
 * from its longest leading part that the kernel takes, then one component
 * at a time (never following a symlink past that part).
 */
/*
 * The last directory open_dir reached by a path past PATH_MAX, per thread
 * (for a relative path, with the working directory it was relative to). A
 * walk goes depth first, so the next long path most often starts with it:
 * only the components after it are opened, not all of them again (a tree
 * 2000 levels deep took seconds of system time otherwise).
 */
static __thread char *long_path;
static __thread size_t long_len;
static __thread int long_fd = -1;
static __thread dev_t long_cwd_dev;
static __thread ino_t long_cwd_ino;

/* The working directory's identity (0, 0 when it cannot be read). */
static void cwd_id(dev_t *dev, ino_t *ino) {
  struct stat st;
  if (stat(".", &st) != 0) st.st_dev = 0, st.st_ino = 0;
  *dev = st.st_dev;
  *ino = st.st_ino;
}

static void remember_long(const char *path, size_t len, int fd) {
  char *p = malloc(len + 1);
  int keep = p ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (keep < 0) {
    free(p);
    return;
  }
  memcpy(p, path, len + 1);
  if (long_fd >= 0) close(long_fd);
  free(long_path);
  long_path = p;
  long_len = len;
  long_fd = keep;
  if (path[0] != '/') cwd_id(&long_cwd_dev, &long_cwd_ino);
}

/* Whether the remembered directory is a prefix of path (and, for a relative one, the working directory the same). */
static int long_prefix(const char *path, size_t len) {
  if (long_fd < 0 || len <= long_len || path[long_len] != '/' || memcmp(path, long_path, long_len) != 0) return 0;
  if (path[0] == '/') return 1;
  dev_t dev;
  ino_t ino;
  cwd_id(&dev, &ino);
  return ino != 0 && dev == long_cwd_dev && ino == long_cwd_ino;
}

static int open_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0 || errno != ENAMETOOLONG) return fd;
  size_t len = strlen(path);
  const char *rest = path;
  if (long_prefix(path, len)) {
    fd = fcntl(long_fd, F_DUPFD_CLOEXEC, 0);
    rest = path + long_len;
  } else {
    /*
     * The longest leading part the kernel takes is opened as a short path
     * would be (symlinks in it followed: DIR itself may be reached through
     * one); only the components past it are opened one at a time.
     */
    size_t cut = len < PATH_MAX ? len : PATH_MAX - 1;
    while (cut > 0 && path[cut] != '/') cut--;
    if (cut == 0) {
      fd = open(path[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else {
      char *head = strndup(path, cut);
      if (!head) {
        errno = ENOMEM;
        return -1;
      }
      fd = open(head, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      free(head);
      rest = path + cut;
    }
  }
  char *copy = strdup(rest);
  if (!copy) {
    if (fd >= 0) close(fd);
    errno = ENOMEM;
    return -1;
  }
  char *save = NULL;
  for (char *c = strtok_r(copy, "/", &save); c && fd >= 0; c = strtok_r(NULL, "/", &save)) {
    int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    int e = errno;
    close(fd);
    fd = next;
    errno = e;
  }
  free(copy);
  if (fd >= 0) remember_long(path, len, fd);
  return fd;
}

/* open(path, flags), also for a path longer than the kernel takes (its directory opened as open_dir does). */
static int open_file(const char *path, int flags) {
  int fd = open(path, flags);
  if (fd >= 0 || errno != ENAMETOOLONG) return fd;
  const char *slash = strrchr(path, '/');
  if (!slash) return -1;
  char *dir = strndup(path, (size_t)(slash - path) + 1);
  if (!dir) {
    errno = ENOMEM;
    return -1;
  }
  int dfd = open_dir(dir);
  int e = errno;
  free(dir);
  if (dfd < 0) {
    errno = e;
    return -1;
  }
  fd = openat(dfd, slash + 1, flags);
  e = errno;
  close(dfd);
  errno = e;
  return fd;
}

typedef struct {
  char *buf;
  size_t cap;
} scratch_t;

static int scratch_fit(scratch_t *s, size_t n) {
  if (n <= s->cap) return 0;
  size_t cap = s->cap ? s->cap : 4096;
  while (cap < n) cap *= 2;
  char *p = realloc(s->buf, cap);
  if (!p) return -1;
  s->buf = p;
  s->cap = cap;
  return 0;
}

/*
 * All xattrs of one entry, appended as u32 count, then per xattr u32 name
 * length, name, u32 value length, value. From the open descriptor `fd`
 * when it is not -1; else `at` names the entry without following it (an
 * lxattr path) or, with follow = 1, is a path to follow.
 * Returns 0, or an errno with *syscall set.
 */
static int encode_xattrs(out_t *o, const char *at, int fd, int follow, int user_only, scratch_t *names, scratch_t *value,
                         const char **syscall) {
  size_t count_at = o->len;
  uint32_t count = 0;
  put_u32(o, 0);
  ssize_t n;
  for (;;) {
    n = fd >= 0   ? flistxattr(fd, names->buf, names->cap)
        : follow ? listxattr(at, names->buf, names->cap)
                 : llistxattr(at, names->buf, names->cap);
    if (n >= 0) break;
    if (errno == ENOTSUP) return 0;
    if (errno != ERANGE) {
      *syscall = "listxattr";
      return errno;
    }
    ssize_t want = fd >= 0 ? flistxattr(fd, NULL, 0) : follow ? listxattr(at, NULL, 0) : llistxattr(at, NULL, 0);
    if (want < 0) {
      *syscall = "listxattr";
      return errno;
    }
    if (scratch_fit(names, (size_t)want + 1)) return ENOMEM;
  }
  for (ssize_t i = 0; i < n;) {
    const char *name = names->buf + i;
    size_t len = strnlen(name, (size_t)(n - i));
    i += (ssize_t)len + 1;
    if (len == 0) continue;
    if (user_only && strncmp(name, "user.", 5) != 0) continue;
    ssize_t v;
    for (;;) {
      v = fd >= 0   ? fgetxattr(fd, name, value->buf, value->cap)
          : follow ? getxattr(at, name, value->buf, value->cap)
                   : lgetxattr(at, name, value->buf, value->cap);
      if (v >= 0) break;
      if (errno == ENODATA) break; /* removed meanwhile */
      if (errno != ERANGE) {
        *syscall = "getxattr";
        return errno;
      }
      ssize_t want = fd >= 0 ? fgetxattr(fd, name, NULL, 0) : follow ? getxattr(at, name, NULL, 0) : lgetxattr(at, name, NULL, 0);
      if (want < 0) {
        if (errno == ENODATA) break;
        *syscall = "getxattr";
        return errno;
      }
      if (scratch_fit(value, (size_t)want + 1)) return ENOMEM;
    }
    if (v < 0) continue;
    put_u32(o, (uint32_t)len);
    put_bytes(o, name, len);
    put_u32(o, (uint32_t)v);
    put_bytes(o, value->buf, (size_t)v);
    count++;
  }
  if (!o->oom) memcpy(o->p + count_at, &count, 4);
  return 0;
}

/*
 * One entry, in `o`, with its name and data appended to `tail` (offsets are
 * into the tail, which follows the entries: the reader copies it once per
 * directory and keeps views of it):
 *   u32 name offset, u32 name length,
 *   u32 st_mode, st_uid, st_gid, st_nlink, low 32 bits of st_rdev,
 *   f64 st_size, f64 st_ino (rounded as a JS number), u32 st_ino low, high,
 *   u32 st_dev low, high, f64 st_mtime seconds, u32 nanoseconds,
 *   xattrs (see encode_xattrs; a zero count when not asked for),
 *   u32 data offset, u32 data length (0xffffffff: none): a symlink's target
 *   or the content of a regular file of 1..inlineMax bytes.
 */
static int encode_entry(out_t *o, out_t *tail, int dfd, int in_dir, const char *name, int xattr_mode, uint32_t inline_max,
                        scratch_t *path, scratch_t *names, scratch_t *value, const char **syscall) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    *syscall = "lstat";
    return errno;
  }
  size_t nlen = strlen(name);
  put_u32(o, (uint32_t)tail->len);
  put_u32(o, (uint32_t)nlen);
  put_bytes(tail, name, nlen);
  put_u32(o, st.st_mode);
  put_u32(o, st.st_uid);
  put_u32(o, st.st_gid);
  put_u32(o, (uint32_t)st.st_nlink);
  put_u32(o, (uint32_t)(st.st_rdev & 0xffffffffu));
  put_f64(o, (double)st.st_size);
  put_f64(o, (double)(uint64_t)st.st_ino);
  put_u32(o, (uint32_t)((uint64_t)st.st_ino & 0xffffffffu));
  put_u32(o, (uint32_t)((uint64_t)st.st_ino >> 32));
  put_u32(o, (uint32_t)((uint64_t)st.st_dev & 0xffffffffu));
  put_u32(o, (uint32_t)((uint64_t)st.st_dev >> 32));
  put_f64(o, (double)st.st_mtim.tv_sec);
  put_u32(o, (uint32_t)st.st_mtim.tv_nsec);

  int small_file = S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size <= inline_max;
  /*
   * Xattrs are read by a path relative to the directory already open, so a
   * parent renamed or replaced by a symlink meanwhile changes nothing (the
   * l-calls never follow NAME itself): with `in_dir`, the working directory
   * is that directory and NAME alone is the path; otherwise a regular file
   * or directory is opened relative to the directory's descriptor (never
   * following a symlink; O_NONBLOCK: whatever replaced it meanwhile never
   * blocks the open) and read from that descriptor, anything else by
   * /proc/self/fd/N/NAME.
   */
  int fd = -1;
  if (small_file || (!in_dir && xattr_mode != 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))) {
    fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
    if (fd < 0 && (small_file || errno != EACCES)) {
      *syscall = "open";
      return errno;
    }
  }
  int err = 0;
  if (xattr_mode == 0) {
    put_u32(o, 0);
  } else if (in_dir) {
    err = encode_xattrs(o, name, -1, 0, xattr_mode == 2, names, value, syscall);
  } else if (fd >= 0) {
    err = encode_xattrs(o, NULL, fd, 0, xattr_mode == 2, names, value, syscall);
  } else {
    char pre[32];
    int pl = snprintf(pre, sizeof pre, "/proc/self/fd/%d/", dfd);
    if (scratch_fit(path, (size_t)pl + nlen + 1)) err = ENOMEM;
    else {
      memcpy(path->buf, pre, (size_t)pl);
      memcpy(path->buf + pl, name, nlen + 1);
      err = encode_xattrs(o, path->buf, -1, 0, xattr_mode == 2, names, value, syscall);
    }
  }
  if (err) {
    if (fd >= 0) close(fd);
    return err;
  }

  if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX + 1];
    ssize_t n = readlinkat(dfd, name, target, sizeof target);
    if (n < 0) {
      *syscall = "readlink";
      return errno;
    }
    put_u32(o, (uint32_t)tail->len);
    put_u32(o, (uint32_t)n);
    put_bytes(tail, target, (size_t)n);
  } else if (small_file) {
    char small[BLOCK + 1];
    size_t want = (size_t)st.st_size + 1, got = 0;
    while (got < want) {
      ssize_t n = read(fd, small + got, want - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        *syscall = "read";
        return e;
      }
      if (n == 0) break;
      got += (size_t)n;
    }
    if (got != (size_t)st.st_size) {
      close(fd);
      *syscall = "read";
      return -1; /* changed while it was read */
    }
    put_u32(o, (uint32_t)tail->len);
    put_u32(o, (uint32_t)got);
    put_bytes(tail, small, got);
  } else {
    put_u32(o, 0);
    put_u32(o, 0xffffffffu);
  }
  if (fd >= 0 && close(fd) != 0 && errno != EINTR) {
    *syscall = "close";
    return errno;
  }
  return 0;
}

/* A path given as a Buffer, NUL-terminated and malloc'ed into *out: 0, EINVAL (a NUL inside) or ENOMEM. */
static int buffer_path(const void *data, size_t len, char **out) {
  *out = NULL;
  if (memchr(data, 0, len) != NULL) return EINVAL;
  char *p = malloc(len + 1);
  if (!p) return ENOMEM;
  memcpy(p, data, len);
  p[len] = 0;
  *out = p;
  return 0;
}

static napi_value scan_dir(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *pathData;
  size_t pathLen;
  int32_t xattr_mode;
  uint32_t inline_max;
  bool use_cwd = false;
  if (argc < 3 || napi_get_buffer_info(env, argv[0], &pathData, &pathLen) != napi_ok ||
      napi_get_value_int32(env, argv[1], &xattr_mode) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &inline_max) != napi_ok || inline_max > BLOCK ||
      (argc >= 4 && napi_get_value_bool(env, argv[3], &use_cwd) != napi_ok)) {
    napi_throw_type_error(env, NULL, "scanDir(path: Buffer, xattrMode: number, inlineMax: number, useCwd?: boolean)");
    return NULL;
  }
  char *dir;
  int perr = buffer_path(pathData, pathLen, &dir);
  if (perr) {
    throw_sys(env, errno_code(perr), "scandir", NULL);
    return NULL;
  }

  int dfd = open_dir(dir);
  if (dfd < 0) {
    int e = errno;
    free(dir);
    throw_sys(env, errno_code(e), "scandir", NULL);
    return NULL;
  }
  int dfd2 = dup(dfd);
  DIR *d = dfd2 >= 0 ? fdopendir(dfd2) : NULL;
  if (!d) {
    int e = errno;
    if (dfd2 >= 0) close(dfd2);
    close(dfd);
    free(dir);
    throw_sys(env, errno_code(e), "scandir", NULL);
    return NULL;
  }

  /* Names: one arena, then an array of pointers into it, sorted. */
  out_t arena = {0};
  size_t count = 0;
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    put_bytes(&arena, n, strlen(n) + 1);
    count++;
    errno = 0;
  }
  int rerr = errno;
  closedir(d);
  char **names = NULL;
  if (!rerr && !arena.oom && count > 0) {
    names = malloc(count * sizeof *names);
    if (!names) rerr = ENOMEM;
    else {
      size_t at = 0;
      for (size_t i = 0; i < count; i++) {
        names[i] = (char *)arena.p + at;
        at += strlen(names[i]) + 1;
      }
      qsort(names, count, sizeof *names, cmp_names);
    }
  }
  if (arena.oom) rerr = ENOMEM;
  if (rerr) {
    free(names);
    free(arena.p);
    close(dfd);
    free(dir);
    throw_sys(env, errno_code(rerr), "scandir", NULL);
    return NULL;
  }

  /*
   * With useCwd, the working directory is the scanned one while its entries
   * are read (one-name lookups for the xattr calls: the cheapest safe way),
   * and back where it was before this call returns. The caller makes sure
   * nothing else resolves relative paths meanwhile.
   */
  int cwd = -1, in_dir = 0;
  if (use_cwd && xattr_mode != 0) {
    cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    in_dir = cwd >= 0 && fchdir(dfd) == 0;
  }
  out_t o = {0};
  scratch_t path = {0}, xnames = {0}, value = {0};
  scratch_fit(&xnames, 4096);
  scratch_fit(&value, 4096);
  out_t tail = {0};
  put_u32(&o, (uint32_t)count);
  put_u32(&o, 0); /* where the tail starts, filled in below */
  const char *failed = NULL, *syscall = "";
  int err = 0;
  for (size_t i = 0; i < count && !err; i++) {
    err = encode_entry(&o, &tail, dfd, in_dir, names[i], xattr_mode, inline_max, &path, &xnames, &value, &syscall);
    if (err) failed = names[i];
    else if (o.oom || tail.oom) err = ENOMEM, failed = names[i], syscall = "scandir";
  }
  if (!err) {
    uint32_t tail_at = (uint32_t)o.len;
    put_bytes(&o, tail.p, tail.len);
    if (o.oom) err = ENOMEM, syscall = "scandir";
    else memcpy(o.p + 4, &tail_at, 4);
  }
  free(tail.p);
  if (in_dir && fchdir(cwd) != 0 && !err) err = errno, syscall = "chdir", failed = NULL;
  if (cwd >= 0) close(cwd);
  close(dfd);
  free(path.buf);
  free(xnames.buf);
  free(value.buf);
  napi_value result = NULL;
  if (err) {
    throw_sys(env, err == -1 ? "ECHANGED" : errno_code(err), syscall, failed);
  } else if (napi_create_buffer_copy(env, o.len, o.p, NULL, &result) != napi_ok) {
    result = NULL;
  }
  free(names);
  free(arena.p);
  free(o.p);
  free(dir);
  return result;
}

/*
 * readXattrs(path, xattrMode) -> Buffer: the xattrs of `path` itself (not
 * following a symlink), packed as in an entry of scanDir: u32 count, then
 * per xattr u32 name length, name, u32 value length, value.
 */
static napi_value read_xattrs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *pathData;
  size_t pathLen;
  int32_t xattr_mode;
  if (argc < 2 || napi_get_buffer_info(env, argv[0], &pathData, &pathLen) != napi_ok ||
      napi_get_value_int32(env, argv[1], &xattr_mode) != napi_ok || xattr_mode < 1 || xattr_mode > 2) {
    napi_throw_type_error(env, NULL, "readXattrs(path: Buffer, xattrMode: 1 | 2)");
    return NULL;
  }
  char *path;
  int err = buffer_path(pathData, pathLen, &path);
  out_t o = {0};
  scratch_t names = {0}, value = {0};
  const char *syscall = "listxattr";
  if (!err && (scratch_fit(&names, 4096) || scratch_fit(&value, 4096))) err = ENOMEM;
  if (!err) err = encode_xattrs(&o, path, -1, 0, xattr_mode == 2, &names, &value, &syscall);
  if (!err && o.oom) err = ENOMEM;
  napi_value result = NULL;
  if (err) throw_sys(env, errno_code(err), syscall, NULL);
  else if (napi_create_buffer_copy(env, o.len, o.p, NULL, &result) != napi_ok) result = NULL;
  free(o.p);
  free(names.buf);
  free(value.buf);
  free(path);
  return result;
}

/*
 * openLong(path, flags): open(2) for a path of any length (one longer than
 * the kernel takes is opened as open_file does); returns the descriptor.
 */
static napi_value open_long(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *pathData;
  size_t pathLen;
  int32_t flags;
  if (argc < 2 || napi_get_buffer_info(env, argv[0], &pathData, &pathLen) != napi_ok ||
      napi_get_value_int32(env, argv[1], &flags) != napi_ok || (flags & O_CREAT) != 0) {
    napi_throw_type_error(env, NULL, "openLong(path: Buffer, flags: number without O_CREAT)");
    return NULL;
  }
  char *path;
  int err = buffer_path(pathData, pathLen, &path);
  int fd = -1;
  if (!err) {
    fd = open_file(path, flags | O_CLOEXEC);
    if (fd < 0) err = errno;
    free(path);
  }
  if (err) {
    throw_sys(env, errno_code(err), "open", NULL);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

/* ---------- fs-verity ---------- */

typedef struct {
  int alg; /* 1 sha256, 2 sha512 */
  size_t hlen;
  uint8_t level[MAX_LEVELS][BLOCK];
  size_t fill[MAX_LEVELS];
  uint64_t count[MAX_LEVELS];
  int levels;
  uint64_t total;
} verity_t;

static void hash_block(int alg, const uint8_t *data, size_t n, uint8_t *md) {
  if (alg == 1 && n == BLOCK && use_sha_ext) {
    sha256_4k_x1(data, md);
  } else if (alg == 2) {
    sha_ctx_t c;
    SHA512_Init(&c);
    SHA512_Update(&c, data, n);
    SHA512_Final(md, &c);
  } else {
    sha_ctx_t c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, n);
    SHA256_Final(md, &c);
  }
}

static void verity_init(verity_t *v, int alg) {
  v->alg = alg;
  v->hlen = alg == 2 ? 64 : 32;
  v->levels = 0;
  v->total = 0;
}

/* Append one hash to tree level `l`; a level block that fills is hashed into the next. */
static void verity_add(verity_t *v, int l, const uint8_t *h) {
  uint8_t md[64];
  for (;;) {
    if (l == v->levels) {
      v->fill[l] = 0;
      v->count[l] = 0;
      v->levels++;
    }
    memcpy(v->level[l] + v->fill[l], h, v->hlen);
    v->fill[l] += v->hlen;
    v->count[l]++;
    if (v->fill[l] < BLOCK) return;
    hash_block(v->alg, v->level[l], BLOCK, md);
    v->fill[l] = 0;
    h = md;
    l++;
  }
}

/*
 * The hash of each of the n 4096-byte blocks at `data`, one after another
 * at `out`. Data blocks are independent: with the SHA extensions, four (or
 * two) at a time.
 */
static void hash_data_blocks(int alg, const uint8_t *data, size_t n, uint8_t *out) {
  size_t hlen = alg == 2 ? 64 : 32, i = 0;
  if (alg == 1 && use_sha_ext) {
    for (; n - i >= 4; i += 4) {
      const uint8_t *const in4[4] = {data + i * BLOCK, data + (i + 1) * BLOCK, data + (i + 2) * BLOCK, data + (i + 3) * BLOCK};
      uint8_t *const out4[4] = {out + i * 32, out + (i + 1) * 32, out + (i + 2) * 32, out + (i + 3) * 32};
      sha256_4k_x4(in4, out4);
    }
    if (n - i >= 2) {
      sha256_4k_x2(data + i * BLOCK, data + (i + 1) * BLOCK, out + i * 32, out + (i + 1) * 32);
      i += 2;
    }
  }
  for (; i < n; i++) hash_block(alg, data + i * BLOCK, BLOCK, out + i * hlen);
}

/* Hash whole blocks of data (len a multiple of BLOCK, or the zero-padded last one) into the tree. */
static void verity_blocks(verity_t *v, const uint8_t *data, size_t len) {
  uint8_t md[4 * 64];
  for (size_t off = 0; off < len;) {
    size_t k = (len - off) / BLOCK < 4 ? (len - off) / BLOCK : 4;
    hash_data_blocks(v->alg, data + off, k, md);
    for (size_t i = 0; i < k; i++) verity_add(v, 0, md + i * v->hlen);
    off += k * BLOCK;
  }
}

/* The file digest: Merkle root (zeros for no data) in the 256-byte descriptor, hashed. */
static void verity_final(verity_t *v, uint8_t *out) {
  uint8_t root[64] = {0};
  if (v->total > 0) {
    for (int l = 0;; l++) {
      int top = l == v->levels - 1;
      if (top && v->count[l] == 1) {
        memcpy(root, v->level[l], v->hlen);
        break;
      }
      if (v->fill[l] > 0) {
        memset(v->level[l] + v->fill[l], 0, BLOCK - v->fill[l]);
        uint8_t md[64];
        hash_block(v->alg, v->level[l], BLOCK, md);
        v->fill[l] = 0;
        verity_add(v, l + 1, md);
      }
    }
  }
  uint8_t desc[256] = {0};
  desc[0] = 1;                            /* version */
  desc[1] = (uint8_t)v->alg;              /* hash_algorithm */
  desc[2] = 12;                           /* log_blocksize */
  memcpy(desc + 8, &v->total, 8);         /* data_size, little-endian */
  memcpy(desc + 16, root, v->hlen);       /* root_hash */
  hash_block(v->alg, desc, sizeof desc, out);
}

/*
 * Per Node environment (hashFiles runs in several worker threads, each its
 * own environment): the read buffer and the tree state, allocated on first
 * use and freed with the environment.
 */
typedef struct {
  uint8_t *read_buf;
  verity_t *verity;
} env_state_t;

static void free_env_state(napi_env env, void *data, void *hint) {
  env_state_t *st = data;
  free(st->read_buf);
  free(st->verity);
  free(st);
}

static env_state_t *env_state(napi_env env) {
  void *d = NULL;
  napi_get_instance_data(env, &d);
  return d;
}

/*
 * Hash one file. Returns NULL, or a message for the caller ("ENOENT (open)",
 * "changed while it was read") in `msg`.
 */
static const char *hash_file(env_state_t *es, const char *path, double size, double ino, double mtime_ms, int alg,
                             uint8_t *out, char *msg, size_t msglen) {
  if (!es->read_buf && !(es->read_buf = malloc(READ_CHUNK + BLOCK))) return "ENOMEM (read)";
  uint8_t *read_buf = es->read_buf;
  /*
   * O_NONBLOCK: the walk saw a regular file, but a FIFO put in its place
   * meanwhile would block the open (and its reads) forever. Reads are
   * bounded for the same reason: never more than size + 1 bytes in all, so
   * a device put in its place cannot keep the loop reading.
   */
  int fd = open_file(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    snprintf(msg, msglen, "%s (open)", errno_code(errno));
    return msg;
  }
  if (!es->verity && !(es->verity = malloc(sizeof *es->verity))) {
    close(fd);
    return "ENOMEM (read)";
  }
  verity_t *v = es->verity;
  verity_init(v, alg);
  size_t have = 0; /* bytes in read_buf not yet hashed (less than a block) */
  /*
   * The last read asks for a byte more than is left: a regular file reads
   * short only at its end, so getting just what was left means the whole
   * file, without another read to see the end (fstat below catches a file
   * that grows afterwards).
   */
  uint64_t expect = (uint64_t)size;
  for (;;) {
    if (v->total > expect) break; /* longer than the walk saw: changed */
    uint64_t left = expect + 1 - v->total;
    size_t want = left < READ_CHUNK ? (size_t)left : READ_CHUNK;
    ssize_t n = read(fd, read_buf + have, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      snprintf(msg, msglen, "%s (read)", errno_code(errno));
      close(fd);
      return msg;
    }
    if (n == 0) break;
    v->total += (uint64_t)n;
    have += (size_t)n;
    size_t whole = have & ~(size_t)(BLOCK - 1);
    verity_blocks(v, read_buf, whole);
    if (whole < have) memmove(read_buf, read_buf + whole, have - whole);
    have -= whole;
    if ((uint64_t)want == left && (size_t)n < want) break;
  }
  if (have > 0) {
    memset(read_buf + have, 0, BLOCK - have);
    verity_blocks(v, read_buf, BLOCK);
  }
  struct stat st;
  int ok = fstat(fd, &st) == 0;
  close(fd);
  /* The same comparisons the JS path makes, in the same double arithmetic. */
  double ms = (double)st.st_mtim.tv_sec * 1e3 + (double)st.st_mtim.tv_nsec / 1e6;
  if (!ok || (double)v->total != size || (double)st.st_size != size || (double)(uint64_t)st.st_ino != ino ||
      ms != mtime_ms)
    return "changed while it was read";
  verity_final(v, out);
  return NULL;
}

static int grow_path(char **p, size_t *cap, size_t need) {
  char *q = realloc(*p, 2 * need);
  if (!q) return 0;
  *p = q;
  *cap = 2 * need;
  return 1;
}

/*
 * The hash gate: while a walk runs on the main thread, it is the critical
 * path (it finds the files), and libuv's threads hashing beside it on every
 * CPU would time-slice it. setHashLimit(n) lets at most n of them hash at
 * once: a job past the limit sleeps before its batch (not before each file:
 * a wake-up a file preempts the walk more than it saves); 0 lifts the limit.
 * Never used on the main thread.
 */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static uint32_t gate_limit, gate_busy;

static void hash_gate_enter(void) {
  pthread_mutex_lock(&gate_mu);
  while (gate_limit != 0 && gate_busy >= gate_limit) pthread_cond_wait(&gate_cv, &gate_mu);
  gate_busy++;
  pthread_mutex_unlock(&gate_mu);
}

static void hash_gate_leave(void) {
  pthread_mutex_lock(&gate_mu);
  gate_busy--;
  pthread_cond_signal(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
}

static napi_value set_hash_limit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t n;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "setHashLimit(n: number)");
    return NULL;
  }
  pthread_mutex_lock(&gate_mu);
  uint32_t was = gate_limit;
  gate_limit = n;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
  napi_value result;
  napi_create_uint32(env, was, &result);
  return result;
}

/*
 * Hash files paths[ends[i-1]..ends[i]) into out; errs[i] gets a message
 * (malloc'd) for each file that failed, else stays NULL. Returns the number
 * of failures.
 */
static size_t hash_batch(env_state_t *es, const uint8_t *paths, size_t plen, const uint32_t *ends, size_t n,
                         const double *meta, int alg, uint8_t *out, char **errs) {
  size_t hlen = alg == 2 ? 64 : 32, failed = 0;
  char *path = NULL, msg[96];
  size_t path_cap = 0;
  uint32_t start = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t end = ends[i];
    const char *err = NULL;
    if (end < start || end > plen || memchr(paths + start, 0, end - start)) {
      err = "EINVAL (open)";
    } else if (end - start + 1 > path_cap && !grow_path(&path, &path_cap, end - start + 1)) {
      err = "ENOMEM (open)";
    } else {
      memcpy(path, paths + start, end - start);
      path[end - start] = 0;
      err = hash_file(es, path, meta[3 * i], meta[3 * i + 1], meta[3 * i + 2], alg, out + i * hlen, msg, sizeof msg);
    }
    if (end >= start) start = end;
    if (err) {
      errs[i] = strdup(err);
      failed++;
    }
  }
  free(path);
  return failed;
}

/* The messages of hash_batch as a JS array (null where a file was hashed), or null; frees them. */
static napi_value batch_errors(napi_env env, char **errs, size_t n, size_t failed) {
  napi_value result;
  if (failed == 0) {
    napi_get_null(env, &result);
    return result;
  }
  napi_create_array_with_length(env, n, &result);
  for (size_t i = 0; i < n; i++) {
    napi_value v;
    if (errs[i]) napi_create_string_utf8(env, errs[i], NAPI_AUTO_LENGTH, &v);
    else napi_get_null(env, &v);
    napi_set_element(env, result, (uint32_t)i, v);
    free(errs[i]);
  }
  return result;
}

/* Checks the arguments of hashFiles / hashFilesAsync; 0 and a TypeError thrown if they are wrong. */
static int batch_args(napi_env env, napi_value *argv, size_t argc, const char *usage, void **pdata, size_t *plen,
                      void **edata, size_t *n, void **mdata, int32_t *alg, void **odata) {
  napi_typedarray_type t0, t1, t2, t4;
  size_t nmeta, olen;
  if (argc < 5 || napi_get_typedarray_info(env, argv[0], &t0, plen, pdata, NULL, NULL) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &t1, n, edata, NULL, NULL) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &t2, &nmeta, mdata, NULL, NULL) != napi_ok ||
      napi_get_value_int32(env, argv[3], alg) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &t4, &olen, odata, NULL, NULL) != napi_ok || t0 != napi_uint8_array ||
      t1 != napi_uint32_array || t2 != napi_float64_array || t4 != napi_uint8_array || (*alg != 1 && *alg != 2) ||
      nmeta != 3 * *n || olen < *n * (*alg == 2 ? 64 : 32)) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  return 1;
}

static napi_value hash_files(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *pdata, *edata, *mdata, *odata;
  size_t plen, n;
  int32_t alg;
  if (!batch_args(env, argv, argc, "hashFiles(paths, ends, meta, algorithm, out)", &pdata, &plen, &edata, &n, &mdata,
                  &alg, &odata))
    return NULL;
  char **errs = calloc(n ? n : 1, sizeof *errs);
  if (!errs) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  size_t failed = hash_batch(env_state(env), pdata, plen, edata, n, mdata, alg, odata, errs);
  napi_value result = batch_errors(env, errs, n, failed);
  free(errs);
  return result;
}

/*
 * hashFilesAsync(paths, ends, meta, algorithm, out) -> Promise: hashFiles
 * in a libuv thread (no worker isolate to start); resolves to the same
 * errors array or null. The arrays must stay untouched until it settles.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[5];
  const uint8_t *paths;
  size_t plen, n, failed;
  const uint32_t *ends;
  const double *meta;
  int alg;
  uint8_t *out;
  char **errs;
} hash_job_t;

/* libuv's threads live as long as the process: their buffers are kept, one set a thread. */
static __thread env_state_t pool_state;

static void hash_execute(napi_env env, void *data) {
  hash_job_t *j = data;
  hash_gate_enter();
  j->failed = hash_batch(&pool_state, j->paths, j->plen, j->ends, j->n, j->meta, j->alg, j->out, j->errs);
  hash_gate_leave();
}

static void hash_complete(napi_env env, napi_status status, void *data) {
  hash_job_t *j = data;
  napi_value result = batch_errors(env, j->errs, j->n, j->failed);
  napi_resolve_deferred(env, j->deferred, result);
  for (int i = 0; i < 5; i++) napi_delete_reference(env, j->refs[i]);
  napi_delete_async_work(env, j->work);
  free(j->errs);
  free(j);
}

static napi_value hash_files_async(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *pdata, *edata, *mdata, *odata;
  size_t plen, n;
  int32_t alg;
  if (!batch_args(env, argv, argc, "hashFilesAsync(paths, ends, meta, algorithm, out)", &pdata, &plen, &edata, &n,
                  &mdata, &alg, &odata))
    return NULL;
  hash_job_t *j = calloc(1, sizeof *j);
  if (!j || !(j->errs = calloc(n ? n : 1, sizeof *j->errs))) {
    free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->paths = pdata;
  j->plen = plen;
  j->ends = edata;
  j->n = n;
  j->meta = mdata;
  j->alg = alg;
  j->out = odata;
  for (int i = 0; i < 5; i++) napi_create_reference(env, argv[i], 1, &j->refs[i]);
  return queue_job(env, "cfsctl.hashFiles", hash_execute, hash_complete, j, &j->work, &j->deferred);
}

/*
 * The arguments (data: Uint8Array, algorithm, out: Uint8Array, at) of
 * verityDigest and hashBlocks: *out points at out[at], which must have room
 * for one digest, or with `blocks` for one per 4096-byte block of data (a
 * whole number of them). 0 and a TypeError thrown if they are wrong.
 */
static int data_out_args(napi_env env, napi_callback_info info, const char *usage, int blocks, void **data, size_t *dlen,
                         int32_t *alg, void **out) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type t0, t2;
  size_t olen;
  uint32_t at;
  if (argc < 4 || napi_get_typedarray_info(env, argv[0], &t0, dlen, data, NULL, NULL) != napi_ok ||
      napi_get_value_int32(env, argv[1], alg) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &t2, &olen, out, NULL, NULL) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &at) != napi_ok || t0 != napi_uint8_array || t2 != napi_uint8_array ||
      (*alg != 1 && *alg != 2) || (blocks && *dlen % BLOCK != 0) ||
      (size_t)at + (blocks ? *dlen / BLOCK : 1) * (*alg == 2 ? 64 : 32) > olen) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  *out = (uint8_t *)*out + at;
  return 1;
}

/* fsverityDigest(data: Uint8Array, algorithm, out: Uint8Array, at): the digest of bytes in memory. */
static napi_value verity_digest(napi_env env, napi_callback_info info) {
  void *ddata, *odata;
  size_t dlen;
  int32_t alg;
  if (!data_out_args(env, info, "verityDigest(data, algorithm, out, at)", 0, &ddata, &dlen, &alg, &odata)) return NULL;
  env_state_t *st = env_state(env);
  if (!st->verity && !(st->verity = malloc(sizeof *st->verity))) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  verity_t *tv = st->verity;
  verity_init(tv, alg);
  tv->total = dlen;
  size_t whole = dlen & ~(size_t)(BLOCK - 1);
  verity_blocks(tv, ddata, whole);
  if (whole < dlen) {
    uint8_t last[BLOCK] = {0};
    memcpy(last, (uint8_t *)ddata + whole, dlen - whole);
    verity_blocks(tv, last, BLOCK);
  }
  verity_final(tv, odata);
  return NULL;
}

/* ---------- writing object files off the main thread ---------- */

/*
 * writeFile(path, parts, chmod) -> Promise<boolean>: create `path` (O_EXCL,
 * mode 0644; with chmod, set 0644 whatever the umask), write the Buffers of
 * `parts` one after another, start its writeback (sync_file_range: the
 * final syncfs then has less to wait for) and close it, in a libuv thread.
 * A missing parent directory is made (0755); the promise resolves to
 * whether it was. Rejects with an Error{code, syscall}.
 *
 * writeFiles(paths, parts, counts, chmod) -> Promise<(string|null)[]>: the
 * same for many files in one libuv job (one thread wake-up instead of one
 * per file): file i holds the next counts[i] Buffers of `parts`. Per file:
 * null (written), "made" (written, its directory made) or "<ERRNO> <syscall>".
 */
typedef struct {
  char *path;
  size_t first, niov; /* its Buffers: iov[first .. first + niov) */
  int err;
  const char *syscall;
  int made_dir;
} write_file_t;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep; /* the Buffers stay alive until written */
  struct iovec *iov;
  write_file_t *files;
  size_t n;
  int chmod;
  int single; /* writeFile: resolve to a boolean or reject */
} write_job_t;

/* Set by stopWrites() when the run is interrupted: no file is created after that. */
static int writes_stopped;

static napi_value stop_writes(napi_env env, napi_callback_info info) {
  __atomic_store_n(&writes_stopped, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static void write_one(write_job_t *j, write_file_t *f) {
  if (__atomic_load_n(&writes_stopped, __ATOMIC_SEQ_CST)) {
    f->err = EINTR;
    f->syscall = "open";
    return;
  }
  int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ENOENT) {
    char *slash = strrchr(f->path, '/');
    if (slash && slash != f->path) {
      *slash = 0;
      if (mkdir(f->path, 0755) == 0) f->made_dir = 1;
      *slash = '/';
      fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
  }
  if (fd < 0) {
    f->err = errno;
    f->syscall = "open";
    return;
  }
  if (j->chmod && fchmod(fd, 0644) != 0) {
    f->err = errno;
    f->syscall = "chmod";
  }
  struct iovec *iov = j->iov + f->first;
  size_t i = 0;
  while (!f->err && i < f->niov) {
    int cnt = f->niov - i > 1024 ? 1024 : (int)(f->niov - i);
    ssize_t n = writev(fd, iov + i, cnt);
    if (n < 0) {
      if (errno == EINTR) continue;
      f->err = errno;
      f->syscall = "write";
      break;
    }
    /* Skip what was written; a short write leaves the rest of an iovec. */
    size_t left = (size_t)n;
    while (i < f->niov && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (i < f->niov) {
      iov[i].iov_base = (char *)iov[i].iov_base + left;
      iov[i].iov_len -= left;
    }
  }
  if (!f->err) sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* only a head start: errors show at syncfs */
  if (close(fd) != 0 && !f->err) {
    f->err = errno;
    f->syscall = "close";
  }
}

static void write_execute(napi_env env, void *data) {
  write_job_t *j = data;
  for (size_t i = 0; i < j->n; i++) write_one(j, &j->files[i]);
}

static void write_job_free(write_job_t *j) {
  if (j->files)
    for (size_t i = 0; i < j->n; i++) free(j->files[i].path);
  free(j->files);
  free(j->iov);
  free(j);
}

static void write_complete(napi_env env, napi_status status, void *data) {
  write_job_t *j = data;
  if (j->single) {
    write_file_t *f = &j->files[0];
    if (f->err) {
      napi_reject_deferred(env, j->deferred, sys_error(env, errno_code(f->err), f->syscall));
    } else {
      napi_value made;
      napi_get_boolean(env, f->made_dir != 0, &made);
      napi_resolve_deferred(env, j->deferred, made);
    }
  } else {
    napi_value arr;
    napi_create_array_with_length(env, j->n, &arr);
    for (size_t i = 0; i < j->n; i++) {
      write_file_t *f = &j->files[i];
      napi_value v;
      if (f->err) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s %s", errno_code(f->err), f->syscall);
        napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &v);
      } else if (f->made_dir) {
        napi_create_string_utf8(env, "made", NAPI_AUTO_LENGTH, &v);
      } else {
        napi_get_null(env, &v);
      }
      napi_set_element(env, arr, (uint32_t)i, v);
    }
    napi_resolve_deferred(env, j->deferred, arr);
  }
  napi_delete_reference(env, j->keep);
  napi_delete_async_work(env, j->work);
  write_job_free(j);
}

/* A string argument, malloc'ed; NULL when it is not a string or memory ran out. */
static char *string_arg(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

/* Queue a job whose files and iovecs are filled; `keep` holds the Buffers. */
static napi_value queue_write_job(napi_env env, write_job_t *j, napi_value keep) {
  napi_create_reference(env, keep, 1, &j->keep);
  return queue_job(env, "cfsctl.writeFiles", write_execute, write_complete, j, &j->work, &j->deferred);
}

/* Fill iov[at .. at + n) from the Buffers of the array `arr` starting at index `from`. */
static bool buffers_into(napi_env env, napi_value arr, uint32_t from, uint32_t n, struct iovec *iov) {
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    if (napi_get_element(env, arr, from + i, &e) != napi_ok || napi_get_buffer_info(env, e, &iov[i].iov_base, &iov[i].iov_len) != napi_ok) {
      return false;
    }
  }
  return true;
}

static napi_value write_file(napi_env env, napi_callback_info info) {
  static const char usage[] = "writeFile(path: string, parts: Buffer[], chmod: boolean)";
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false, chmod_flag = false;
  uint32_t n = 0;
  if (argc < 3 || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_value_bool(env, argv[2], &chmod_flag) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  napi_get_array_length(env, argv[1], &n);
  write_job_t *j = calloc(1, sizeof *j);
  if (!j || !(j->files = calloc(1, sizeof *j->files)) || !(j->iov = calloc(n ? n : 1, sizeof *j->iov))) {
    if (j) write_job_free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->n = 1;
  j->single = 1;
  j->chmod = chmod_flag;
  j->files[0].niov = n;
  if (!(j->files[0].path = string_arg(env, argv[0]))) {
    write_job_free(j);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  if (!buffers_into(env, argv[1], 0, n, j->iov)) {
    write_job_free(j);
    napi_throw_type_error(env, NULL, "writeFile: every part must be a Buffer");
    return NULL;
  }
  return queue_write_job(env, j, argv[1]);
}

static napi_value write_files(napi_env env, napi_callback_info info) {
  static const char usage[] = "writeFiles(paths: string[], parts: Buffer[], counts: number[], chmod: boolean)";
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool a0 = false, a1 = false, a2 = false, chmod_flag = false;
  uint32_t nfiles = 0, nparts = 0, ncounts = 0;
  if (argc < 4 || napi_is_array(env, argv[0], &a0) != napi_ok || !a0 || napi_is_array(env, argv[1], &a1) != napi_ok || !a1 ||
      napi_is_array(env, argv[2], &a2) != napi_ok || !a2 || napi_get_value_bool(env, argv[3], &chmod_flag) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  napi_get_array_length(env, argv[0], &nfiles);
  napi_get_array_length(env, argv[1], &nparts);
  napi_get_array_length(env, argv[2], &ncounts);
  write_job_t *j = calloc(1, sizeof *j);
  if (!j || !(j->files = calloc(nfiles ? nfiles : 1, sizeof *j->files)) || !(j->iov = calloc(nparts ? nparts : 1, sizeof *j->iov))) {
    if (j) write_job_free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->n = nfiles;
  j->chmod = chmod_flag;
  size_t at = 0;
  bool ok = ncounts == nfiles;
  for (uint32_t i = 0; ok && i < nfiles; i++) {
    napi_value e;
    uint32_t cnt = 0;
    ok = napi_get_element(env, argv[2], i, &e) == napi_ok && napi_get_value_uint32(env, e, &cnt) == napi_ok && cnt <= nparts - at &&
         napi_get_element(env, argv[0], i, &e) == napi_ok && (j->files[i].path = string_arg(env, e)) != NULL;
    if (!ok) break;
    j->files[i].first = at;
    j->files[i].niov = cnt;
    at += cnt;
  }
  if (!ok || at != nparts || !buffers_into(env, argv[1], 0, nparts, j->iov)) {
    write_job_free(j);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  return queue_write_job(env, j, argv[1]);
}

/* ---------- kernel fs-verity ---------- */

/*
 * The ioctl ABI of linux/fsverity.h, declared here (not every build host
 * has kernel headers) and checked against the header where it exists.
 */
struct cfs_verity_enable_arg {
  uint32_t version; /* 1 */
  uint32_t hash_algorithm;
  uint32_t block_size;
  uint32_t salt_size;
  uint64_t salt_ptr;
  uint32_t sig_size;
  uint32_t reserved1;
  uint64_t sig_ptr;
  uint64_t reserved2[11];
};
/* struct fsverity_digest: this head, then digest_size bytes (the ioctl number has the head's size). */
struct cfs_verity_digest_head {
  uint16_t digest_algorithm;
  uint16_t digest_size; /* in: room; out: size */
};
struct cfs_verity_digest {
  struct cfs_verity_digest_head h;
  uint8_t digest[64];
};
#define CFS_IOC_ENABLE_VERITY _IOW('f', 133, struct cfs_verity_enable_arg)
#define CFS_IOC_MEASURE_VERITY _IOWR('f', 134, struct cfs_verity_digest_head)
#if defined(__has_include)
#if __has_include(<linux/fsverity.h>)
#include <linux/fsverity.h>
_Static_assert(CFS_IOC_ENABLE_VERITY == FS_IOC_ENABLE_VERITY, "FS_IOC_ENABLE_VERITY");
_Static_assert(CFS_IOC_MEASURE_VERITY == FS_IOC_MEASURE_VERITY, "FS_IOC_MEASURE_VERITY");
_Static_assert(sizeof(struct cfs_verity_enable_arg) == sizeof(struct fsverity_enable_arg), "fsverity_enable_arg");
#endif
#endif

/* FS_IOC_ENABLE_VERITY (4096-byte blocks, no salt) on fd: 0 or the errno (EEXIST: it already was). */
static int verity_enable(int fd, int alg) {
  struct cfs_verity_enable_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.version = 1;
  arg.hash_algorithm = (uint32_t)alg;
  arg.block_size = BLOCK;
  int r;
  do r = ioctl(fd, CFS_IOC_ENABLE_VERITY, &arg);
  while (r != 0 && errno == EINTR);
  return r == 0 ? 0 : errno;
}

/* The errno-like code of a digest in another algorithm than asked for. */
#define E_OTHER_ALGORITHM (-1)

/*
 * FS_IOC_MEASURE_VERITY on fd: the digest into md (room for 64 bytes), its
 * length into *len. Returns 0, the errno (ENODATA: no verity), or
 * E_OTHER_ALGORITHM when it is not a digest of algorithm `alg`.
 */
static int verity_measure(int fd, int alg, uint8_t *md, size_t *len) {
  struct cfs_verity_digest d;
  memset(&d, 0, sizeof d);
  d.h.digest_size = sizeof d.digest;
  *len = 0;
  if (ioctl(fd, CFS_IOC_MEASURE_VERITY, &d) != 0) return errno;
  *len = d.h.digest_size < sizeof d.digest ? d.h.digest_size : sizeof d.digest;
  memcpy(md, d.digest, *len);
  return d.h.digest_algorithm == (uint16_t)alg && d.h.digest_size == (alg == 1 ? 32 : 64) ? 0 : E_OTHER_ALGORITHM;
}

static bool fd_alg_args(napi_env env, napi_callback_info info, const char *usage, int32_t *fd, int32_t *alg) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, argv[0], fd) != napi_ok || napi_get_value_int32(env, argv[1], alg) != napi_ok ||
      *fd < 0 || (*alg != 1 && *alg != 2)) {
    napi_throw_type_error(env, NULL, usage);
    return false;
  }
  return true;
}

/* enableVerity(fd, algorithm): null once enabled, else the errno name (EEXIST: it already was). */
static napi_value enable_verity(napi_env env, napi_callback_info info) {
  int32_t fd, alg;
  if (!fd_alg_args(env, info, "enableVerity(fd, algorithm: 1 | 2)", &fd, &alg)) return NULL;
  int err = verity_enable(fd, alg);
  napi_value out;
  if (err == 0) napi_get_null(env, &out);
  else napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &out);
  return out;
}

/* measureVerity(fd, algorithm): the file's fs-verity digest, or the errno name (ENODATA: no verity). */
static napi_value measure_verity(napi_env env, napi_callback_info info) {
  int32_t fd, alg;
  if (!fd_alg_args(env, info, "measureVerity(fd, algorithm: 1 | 2)", &fd, &alg)) return NULL;
  uint8_t md[64];
  size_t len;
  int err = verity_measure(fd, alg, md, &len);
  napi_value out;
  /* Another algorithm than the repository's is a different digest: say so as a code. */
  if (err != 0) {
    napi_create_string_utf8(env, err == E_OTHER_ALGORITHM ? "EALGORITHM" : errno_code(err), NAPI_AUTO_LENGTH, &out);
    return out;
  }
  if (napi_create_buffer_copy(env, len, md, NULL, &out) != napi_ok) return NULL;
  return out;
}

/* ---------- naming objects off the main thread ---------- */

/*
 * nameObjects(paths, verity, digests) -> Promise<{results, verityUnsupported}>:
 * paths holds pairs (temporary file, final name). For each, in a libuv
 * thread: with verity 1 (sha256) or 2 (sha512), FS_IOC_ENABLE_VERITY on the
 * temporary file and FS_IOC_MEASURE_VERITY, which must give the digest at
 * digests[i * size]; then link(2) to the final name (its missing directory
 * made) and unlink the temporary name. results[i]: "stored", "present" (the
 * name existed: same content), "EVERITY:<hex>" (the kernel measured another
 * digest: not named), "noverity" (verity 3 or 4, i.e. 1 or 2 required:
 * not supported here, so not named), or "<ERRNO> <syscall>" (not named, the
 * temporary file left for the caller). Once the kernel answers that it has
 * no fs-verity (ENOTTY, EOPNOTSUPP, EINVAL), the rest of the batch skips the
 * ioctl and verityUnsupported is true.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char **paths; /* 2 * n, each malloc'ed */
  uint8_t *digests;
  size_t n;
  int alg;      /* 0: no verity, 1 sha256, 2 sha512 */
  int required; /* verity must be enabled, else not named */
  int unsupported;
  char (*results)[160];
} name_job_t;

/* The answers meaning "no fs-verity here": the same list as UNSUPPORTED in src/repository/verity.ts. */
static int verity_unsupported_code(int e) { return e == ENOTTY || e == EOPNOTSUPP || e == EINVAL || e == ENOSYS; }

/*
 * fs-verity on the temporary file `tmp` of object i, checked against its
 * digest: whether it may be named. Not supported sets j->unsupported (the
 * caller decides); any other failure is written to res.
 */
static bool verity_before_naming(name_job_t *j, size_t i, const char *tmp, char *res, size_t room) {
  int fd = open(tmp, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(res, room, "%s open", errno_code(errno));
    return false;
  }
  int err = verity_enable(fd, j->alg);
  bool ok = true;
  if (err != 0 && verity_unsupported_code(err)) {
    j->unsupported = 1;
  } else if (err != 0 && err != EEXIST) {
    snprintf(res, room, "%s enable-verity", errno_code(err));
    ok = false;
  } else {
    uint8_t md[64];
    size_t len, size = j->alg == 1 ? 32 : 64;
    err = verity_measure(fd, j->alg, md, &len);
    if (err > 0) {
      snprintf(res, room, "%s measure-verity", errno_code(err));
      ok = false;
    } else if (err == E_OTHER_ALGORITHM || memcmp(md, j->digests + i * size, size) != 0) {
      int k = snprintf(res, room, "EVERITY:");
      for (size_t b = 0; b < len && k + 2 < (int)room; b++) k += snprintf(res + k, 3, "%02x", md[b]);
      ok = false;
    }
  }
  close(fd);
  return ok;
}

static void name_one(name_job_t *j, size_t i) {
  const char *tmp = j->paths[2 * i], *final = j->paths[2 * i + 1];
  char *res = j->results[i];
  if (j->alg && !j->unsupported && !verity_before_naming(j, i, tmp, res, sizeof j->results[i])) return;
  if (j->alg && j->unsupported && j->required) {
    strcpy(res, "noverity");
    return;
  }
  int r = link(tmp, final);
  if (r != 0 && errno == ENOENT) {
    char *slash = strrchr(final, '/');
    if (slash && slash != final) {
      *slash = 0;
      if (mkdir(final, 0755) != 0 && errno != EEXIST) {
        *slash = '/';
        snprintf(res, sizeof j->results[i], "%s mkdir", errno_code(errno));
        return;
      }
      *slash = '/';
      r = link(tmp, final);
    }
  }
  if (r != 0 && errno != EEXIST) {
    snprintf(res, sizeof j->results[i], "%s link", errno_code(errno));
    return;
  }
  strcpy(res, r == 0 ? "stored" : "present");
  unlink(tmp);
}

static void name_execute(napi_env env, void *data) {
  name_job_t *j = data;
  for (size_t i = 0; i < j->n; i++) name_one(j, i);
}

static void name_job_free(name_job_t *j) {
  if (j->paths)
    for (size_t i = 0; i < 2 * j->n; i++) free(j->paths[i]);
  free(j->paths);
  free(j->digests);
  free(j->results);
  free(j);
}

static void name_complete(napi_env env, napi_status status, void *data) {
  name_job_t *j = data;
  napi_value out, arr, flag;
  napi_create_object(env, &out);
  napi_create_array_with_length(env, j->n, &arr);
  for (size_t i = 0; i < j->n; i++) {
    napi_value v;
    napi_create_string_utf8(env, j->results[i], NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, arr, (uint32_t)i, v);
  }
  napi_get_boolean(env, j->unsupported != 0, &flag);
  napi_set_named_property(env, out, "results", arr);
  napi_set_named_property(env, out, "verityUnsupported", flag);
  napi_resolve_deferred(env, j->deferred, out);
  napi_delete_async_work(env, j->work);
  name_job_free(j);
}

static napi_value name_objects(napi_env env, napi_callback_info info) {
  static const char usage[] = "nameObjects(paths: string[] (tmp, final pairs), verity: 0..4, digests: Buffer)";
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false;
  int32_t verity = -1;
  uint32_t len = 0;
  if (argc < 3 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &len) != napi_ok || len % 2 != 0 ||
      napi_get_value_int32(env, argv[1], &verity) != napi_ok || verity < 0 || verity > 4) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  name_job_t *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->n = len / 2;
  j->alg = verity > 2 ? verity - 2 : verity;
  j->required = verity > 2;
  size_t dsize = j->alg == 2 ? 64 : 32;
  void *ddata = NULL;
  size_t dlen = 0;
  if (j->alg && (napi_get_buffer_info(env, argv[2], &ddata, &dlen) != napi_ok || dlen != j->n * dsize)) {
    free(j);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  j->paths = calloc(len ? len : 1, sizeof *j->paths);
  j->results = calloc(j->n ? j->n : 1, sizeof *j->results);
  j->digests = malloc(dlen ? dlen : 1);
  if (!j->paths || !j->results || !j->digests) {
    name_job_free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  if (dlen) memcpy(j->digests, ddata, dlen);
  for (uint32_t i = 0; i < len; i++) {
    napi_value e;
    size_t plen;
    if (napi_get_element(env, argv[0], i, &e) != napi_ok || napi_get_value_string_utf8(env, e, NULL, 0, &plen) != napi_ok ||
        !(j->paths[i] = malloc(plen + 1))) {
      name_job_free(j);
      napi_throw_type_error(env, NULL, usage);
      return NULL;
    }
    napi_get_value_string_utf8(env, e, j->paths[i], plen + 1, &plen);
  }
  return queue_job(env, "cfsctl.nameObjects", name_execute, name_complete, j, &j->work, &j->deferred);
}

/* ---------- streaming SHA-256 off the main thread ---------- */

/*
 * The state is a Buffer of at least sizeof(sha_ctx_t) bytes that the caller
 * owns; sha256Init resets it, sha256Final returns the 32-byte digest.
 * sha256Update(state, parts) hashes the Buffers of `parts`, in order, in a
 * libuv thread: the caller keeps one update of a state in flight at a time
 * (the next starts when the promise settles) and leaves `state` untouched
 * meanwhile.
 */
static sha_ctx_t *sha_state(napi_env env, napi_value v) {
  void *d;
  size_t len;
  if (napi_get_buffer_info(env, v, &d, &len) != napi_ok || len < sizeof(sha_ctx_t) || ((uintptr_t)d & 7) != 0) {
    napi_throw_type_error(env, NULL, "sha256: the state must be an 8-byte aligned Buffer of 256 bytes");
    return NULL;
  }
  return d;
}

static napi_value sha256_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "sha256Init(state)");
    return NULL;
  }
  sha_ctx_t *c = sha_state(env, argv[0]);
  if (c) SHA256_Init(c);
  return NULL;
}

static napi_value sha256_final(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "sha256Final(state)");
    return NULL;
  }
  sha_ctx_t *c = sha_state(env, argv[0]);
  if (!c) return NULL;
  void *md;
  if (napi_create_buffer(env, 32, &md, &out) != napi_ok) return NULL;
  SHA256_Final(md, c);
  return out;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs; /* [state, parts]: alive until hashed */
  sha_ctx_t *ctx;
  struct iovec *iov;
  size_t niov;
} sha_job_t;

static void sha_execute(napi_env env, void *data) {
  sha_job_t *j = data;
  for (size_t i = 0; i < j->niov; i++) SHA256_Update(j->ctx, j->iov[i].iov_base, j->iov[i].iov_len);
}

static void sha_complete(napi_env env, napi_status status, void *data) {
  sha_job_t *j = data;
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_resolve_deferred(env, j->deferred, undef);
  napi_delete_reference(env, j->refs);
  napi_delete_async_work(env, j->work);
  free(j->iov);
  free(j);
}

static napi_value sha256_update(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false;
  if (argc < 2 || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, NULL, "sha256Update(state: Buffer, parts: Buffer[])");
    return NULL;
  }
  sha_ctx_t *ctx = sha_state(env, argv[0]);
  if (!ctx) return NULL;
  uint32_t n = 0;
  napi_get_array_length(env, argv[1], &n);
  sha_job_t *j = calloc(1, sizeof *j);
  if (!j || !(j->iov = calloc(n ? n : 1, sizeof *j->iov))) {
    free(j);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  if (!buffers_into(env, argv[1], 0, n, j->iov)) {
    free(j->iov);
    free(j);
    napi_throw_type_error(env, NULL, "sha256Update: every part must be a Buffer");
    return NULL;
  }
  j->niov = n;
  j->ctx = ctx;
  napi_value keep;
  napi_create_array_with_length(env, 2, &keep);
  napi_set_element(env, keep, 0, argv[0]);
  napi_set_element(env, keep, 1, argv[1]);
  napi_create_reference(env, keep, 1, &j->refs);
  return queue_job(env, "cfsctl.sha256Update", sha_execute, sha_complete, j, &j->work, &j->deferred);
}

/*
 * hashBlocks(data, algorithm, out, at): the hash of each 4096-byte block of
 * `data` (a whole number of blocks), one after another at out[at…]: the
 * first level of an fs-verity tree, for hashers that keep the rest.
 */
static napi_value hash_blocks(napi_env env, napi_callback_info info) {
  void *ddata, *odata;
  size_t dlen;
  int32_t alg;
  if (!data_out_args(env, info, "hashBlocks(data, algorithm, out, at)", 1, &ddata, &dlen, &alg, &odata)) return NULL;
  hash_data_blocks(alg, ddata, dlen / BLOCK, odata);
  return NULL;
}

/*
 * useShaExtensions(on?): whether 4096-byte SHA-256 blocks go through the
 * SHA extensions; `on` false makes every block take OpenSSL's path (for
 * tests comparing the two), true turns them back on where the CPU has them.
 */
static napi_value use_sha_extensions(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool on;
  if (argc >= 1 && napi_get_value_bool(env, argv[0], &on) == napi_ok) use_sha_ext = on && sha256_4k_available();
  napi_get_boolean(env, use_sha_ext != 0, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  const uint16_t probe = 1;
  if (*(const uint8_t *)&probe != 1) {
    napi_throw_error(env, NULL, "cfsctl's native addon needs a little-endian machine");
    return NULL;
  }
  napi_property_descriptor props[] = {
      {"scanDir", NULL, scan_dir, NULL, NULL, NULL, napi_default, NULL},
      {"readXattrs", NULL, read_xattrs, NULL, NULL, NULL, napi_default, NULL},
      {"openLong", NULL, open_long, NULL, NULL, NULL, napi_default, NULL},
      {"hashFiles", NULL, hash_files, NULL, NULL, NULL, napi_default, NULL},
      {"hashFilesAsync", NULL, hash_files_async, NULL, NULL, NULL, napi_default, NULL},
      {"setHashLimit", NULL, set_hash_limit, NULL, NULL, NULL, napi_default, NULL},
      {"stopWrites", NULL, stop_writes, NULL, NULL, NULL, napi_default, NULL},
      {"verityDigest", NULL, verity_digest, NULL, NULL, NULL, napi_default, NULL},
      {"writeFile", NULL, write_file, NULL, NULL, NULL, napi_default, NULL},
      {"writeFiles", NULL, write_files, NULL, NULL, NULL, napi_default, NULL},
      {"hashBlocks", NULL, hash_blocks, NULL, NULL, NULL, napi_default, NULL},
      {"useShaExtensions", NULL, use_sha_extensions, NULL, NULL, NULL, napi_default, NULL},
      {"enableVerity", NULL, enable_verity, NULL, NULL, NULL, napi_default, NULL},
      {"measureVerity", NULL, measure_verity, NULL, NULL, NULL, napi_default, NULL},
      {"nameObjects", NULL, name_objects, NULL, NULL, NULL, napi_default, NULL},
      {"sha256Init", NULL, sha256_init, NULL, NULL, NULL, napi_default, NULL},
      {"sha256Update", NULL, sha256_update, NULL, NULL, NULL, napi_default, NULL},
      {"sha256Final", NULL, sha256_final, NULL, NULL, NULL, napi_default, NULL},
  };
  use_sha_ext = sha256_4k_available();
  env_state_t *st = calloc(1, sizeof *st);
  if (!st || napi_set_instance_data(env, st, free_env_state, NULL) != napi_ok) {
    free(st);
    napi_throw_error(env, NULL, "cfsctl's native addon could not set up its state");
    return NULL;
  }
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
