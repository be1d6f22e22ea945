/*
 * The Python engine's WASI layer: a file system in linear memory, and the
 * few WASI functions that do reach the host.
 *
 * wasi-libc calls WASI through functions named
 * __imported_wasi_snapshot_preview1_NAME, which it declares as imports.
 * Defining them here makes the linker bind wasi-libc to these definitions
 * instead of importing them, so that the engine imports from
 * wasi_snapshot_preview1 only what this file forwards:
 *
 *   fd_write            stdout and stderr, to the call's log
 *   clock_time_get,
 *   clock_res_get       time (the sandbox's fake clock unless granted)
 *   random_get          os.urandom, random's seed
 *   environ_get,
 *   environ_sizes_get   os.environ (the manifest's env, fixed at the snapshot)
 *   poll_oneoff         time.sleep (clock subscriptions only)
 *
 * Everything else is answered here. The file system is one tree in linear
 * memory, with an empty /tmp: a script can write, read, list, rename and
 * delete files and directories, and what it wrote vanishes with the rest of
 * its memory when the sandbox is reset. Nothing is read from or written to
 * the host's disk. stdin is empty. There are no sockets, no processes, no
 * symbolic or hard links; proc_exit traps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wasi/api.h>

#define HOST(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(#name)))

HOST(fd_write) int32_t host_fd_write(int32_t fd, int32_t iovs, int32_t n, int32_t nwritten);
HOST(clock_time_get) int32_t host_clock_time_get(int32_t id, int64_t precision, int32_t out);
HOST(clock_res_get) int32_t host_clock_res_get(int32_t id, int32_t out);
HOST(random_get) int32_t host_random_get(int32_t buf, int32_t len);
HOST(environ_get) int32_t host_environ_get(int32_t environ, int32_t buf);
HOST(environ_sizes_get) int32_t host_environ_sizes_get(int32_t count, int32_t size);
HOST(poll_oneoff) int32_t host_poll_oneoff(int32_t in, int32_t out, int32_t n, int32_t nevents);

/* WASI(name) names wasi-libc's binding for the WASI function name. */
#define WASI(name) __imported_wasi_snapshot_preview1_##name

#define PTR(p) ((void *)(uintptr_t)(uint32_t)(p))

enum {
    OK = __WASI_ERRNO_SUCCESS,
    E_BADF = __WASI_ERRNO_BADF,
    E_EXIST = __WASI_ERRNO_EXIST,
    E_INVAL = __WASI_ERRNO_INVAL,
    E_ISDIR = __WASI_ERRNO_ISDIR,
    E_NOENT = __WASI_ERRNO_NOENT,
    E_NOMEM = __WASI_ERRNO_NOMEM,
    E_NOSPC = __WASI_ERRNO_NOSPC,
    E_NOTDIR = __WASI_ERRNO_NOTDIR,
    E_NOTEMPTY = __WASI_ERRNO_NOTEMPTY,
    E_NOTSUP = __WASI_ERRNO_NOTSUP,
    E_SPIPE = __WASI_ERRNO_SPIPE,
    E_NAMETOOLONG = __WASI_ERRNO_NAMETOOLONG,
    E_MFILE = __WASI_ERRNO_MFILE,
    E_BUSY = __WASI_ERRNO_BUSY,
    E_ACCES = __WASI_ERRNO_ACCES,
};

/* --- The tree. --- */

struct node {
    uint8_t type; /* __WASI_FILETYPE_DIRECTORY or _REGULAR_FILE */
    uint64_t ino;
    char *name;           /* in parent; NULL for the root and unlinked nodes */
    struct node *parent;  /* NULL for the root and unlinked nodes */
    struct node *child;   /* first entry of a directory */
    struct node *next;    /* next entry of the parent */
    uint32_t open;        /* descriptors open on it */
    uint64_t atim, mtim, ctim;
    unsigned char *data;  /* a file's bytes */
    uint64_t size, cap;
};

static struct node *root;
static uint64_t next_ino = 1;

static uint64_t now(void)
{
    uint64_t t = 0;
    if (host_clock_time_get(__WASI_CLOCKID_REALTIME, 1, (int32_t)(uintptr_t)&t) != 0)
        return 0;
    return t;
}

static struct node *new_node(uint8_t type)
{
    struct node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->type = type;
    n->ino = next_ino++;
    n->atim = n->mtim = n->ctim = now();
    return n;
}

static void free_node(struct node *n)
{
    free(n->data);
    free(n->name);
    free(n);
}

/* detach takes n out of its parent. */
static void detach(struct node *n)
{
    struct node **p = &n->parent->child;
    while (*p != n)
        p = &(*p)->next;
    *p = n->next;
    n->parent->mtim = now();
    n->parent = NULL;
    n->next = NULL;
    free(n->name);
    n->name = NULL;
}

/* attach puts n into dir under name (len bytes). */
static int attach(struct node *dir, struct node *n, const char *name, size_t len)
{
    char *s = malloc(len + 1);
    if (s == NULL)
        return E_NOMEM;
    memcpy(s, name, len);
    s[len] = 0;
    n->name = s;
    n->parent = dir;
    n->next = dir->child;
    dir->child = n;
    dir->mtim = now();
    return OK;
}

static struct node *lookup(struct node *dir, const char *name, size_t len)
{
    for (struct node *c = dir->child; c != NULL; c = c->next)
        if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

/* release frees an unlinked node once nothing refers to it. */
static void release(struct node *n)
{
    if (n != NULL && n != root && n->parent == NULL && n->open == 0)
        free_node(n);
}

/* --- Descriptors. 0 to 2 are stdio, 3 the preopened root "/". --- */

enum { MAX_FDS = 256, FD_ROOT = 3 };

struct fdesc {
    struct node *node; /* NULL: unused, or stdio */
    uint8_t used;
    uint16_t flags;    /* __WASI_FDFLAGS_* */
    uint64_t rights;
    uint64_t off;
};

static struct fdesc fds[MAX_FDS] = {
    [0] = {.used = 1, .rights = __WASI_RIGHTS_FD_READ},
    [1] = {.used = 1, .rights = __WASI_RIGHTS_FD_WRITE},
    [2] = {.used = 1, .rights = __WASI_RIGHTS_FD_WRITE},
};

static const uint64_t file_rights =
    __WASI_RIGHTS_FD_DATASYNC | __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_SEEK |
    __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS | __WASI_RIGHTS_FD_SYNC | __WASI_RIGHTS_FD_TELL |
    __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_ADVISE | __WASI_RIGHTS_FD_ALLOCATE |
    __WASI_RIGHTS_FD_FILESTAT_GET | __WASI_RIGHTS_FD_FILESTAT_SET_SIZE |
    __WASI_RIGHTS_FD_FILESTAT_SET_TIMES | __WASI_RIGHTS_POLL_FD_READWRITE;

static const uint64_t dir_rights =
    __WASI_RIGHTS_PATH_CREATE_DIRECTORY | __WASI_RIGHTS_PATH_CREATE_FILE |
    __WASI_RIGHTS_PATH_OPEN | __WASI_RIGHTS_FD_READDIR |
    __WASI_RIGHTS_PATH_RENAME_SOURCE | __WASI_RIGHTS_PATH_RENAME_TARGET |
    __WASI_RIGHTS_PATH_FILESTAT_GET | __WASI_RIGHTS_PATH_FILESTAT_SET_SIZE |
    __WASI_RIGHTS_PATH_FILESTAT_SET_TIMES | __WASI_RIGHTS_FD_FILESTAT_GET |
    __WASI_RIGHTS_FD_FILESTAT_SET_TIMES | __WASI_RIGHTS_PATH_REMOVE_DIRECTORY |
    __WASI_RIGHTS_PATH_UNLINK_FILE | __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS;

/* The tree is made by wasi-libc's constructors' first WASI call (its
 * preopen scan), before cloister_init, so it is in the snapshot. */
static void ensure_tree(void)
{
    if (root != NULL)
        return;
    root = new_node(__WASI_FILETYPE_DIRECTORY);
    struct node *tmp = new_node(__WASI_FILETYPE_DIRECTORY);
    if (root == NULL || tmp == NULL || attach(root, tmp, "tmp", 3) != OK)
        __builtin_trap();
    fds[FD_ROOT] = (struct fdesc){.node = root, .used = 1, .rights = dir_rights | file_rights};
    root->open = 1;
}

static struct fdesc *fd_of(int32_t fd)
{
    ensure_tree();
    if (fd < 0 || fd >= MAX_FDS || !fds[fd].used)
        return NULL;
    return &fds[fd];
}

static int is_stdio(int32_t fd) { return fd >= 0 && fd <= 2; }

/* --- Paths. --- */

/* resolve walks path (len bytes, relative to dir) to its last component:
 * *parent is the directory that holds it, *name and *name_len the
 * component ("" for dir itself), *out the node if it exists. */
static int resolve(struct node *dir, const char *path, size_t len,
                   struct node **parent, const char **name, size_t *name_len, struct node **out)
{
    if (dir == NULL || dir->type != __WASI_FILETYPE_DIRECTORY)
        return E_NOTDIR;
    if (len == 0)
        return E_NOENT;
    if (path[0] == '/') /* wasi-libc passes relative paths */
        dir = root;
    struct node *cur = dir;
    const char *last = "";
    size_t last_len = 0;
    size_t i = 0;
    for (;;) {
        while (i < len && path[i] == '/')
            i++;
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        size_t clen = i - start;
        int more = 0;
        for (size_t j = i; j < len; j++)
            if (path[j] != '/') {
                more = 1;
                break;
            }
        const char *c = path + start;
        if (clen > 255)
            return E_NAMETOOLONG;
        if (!more) {
            if (clen == 0 || (clen == 1 && c[0] == '.')) {
                /* dir itself */
                *parent = cur->parent != NULL ? cur->parent : cur;
                *name = "";
                *name_len = 0;
                *out = cur;
                return OK;
            }
            if (clen == 2 && c[0] == '.' && c[1] == '.') {
                struct node *up = cur->parent != NULL ? cur->parent : cur;
                *parent = up->parent != NULL ? up->parent : up;
                *name = "";
                *name_len = 0;
                *out = up;
                return OK;
            }
            last = c;
            last_len = clen;
            break;
        }
        if (clen == 0 || (clen == 1 && c[0] == '.'))
            continue;
        if (clen == 2 && c[0] == '.' && c[1] == '.') {
            if (cur->parent != NULL)
                cur = cur->parent;
            continue;
        }
        struct node *n = lookup(cur, c, clen);
        if (n == NULL)
            return E_NOENT;
        if (n->type != __WASI_FILETYPE_DIRECTORY)
            return E_NOTDIR;
        cur = n;
    }
    *parent = cur;
    *name = last;
    *name_len = last_len;
    *out = lookup(cur, last, last_len);
    /* "name/" must be a directory */
    if (*out != NULL && len > 0 && path[len - 1] == '/' && (*out)->type != __WASI_FILETYPE_DIRECTORY)
        return E_NOTDIR;
    return OK;
}

static int resolve_fd(int32_t fd, int32_t path, int32_t len,
                      struct node **parent, const char **name, size_t *name_len, struct node **out)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || d->node == NULL)
        return E_BADF;
    return resolve(d->node, PTR(path), (size_t)(uint32_t)len, parent, name, name_len, out);
}

/* --- File contents. --- */

static int grow(struct node *n, uint64_t size)
{
    if (size <= n->cap)
        return OK;
    if (size > (uint64_t)1 << 31)
        return E_NOSPC;
    uint64_t cap = n->cap < 256 ? 256 : n->cap;
    while (cap < size)
        cap *= 2;
    unsigned char *p = realloc(n->data, (size_t)cap);
    if (p == NULL)
        return E_NOSPC;
    n->data = p;
    n->cap = cap;
    return OK;
}

static int set_size(struct node *n, uint64_t size)
{
    int e = grow(n, size);
    if (e != OK)
        return e;
    if (size > n->size)
        memset(n->data + n->size, 0, (size_t)(size - n->size));
    n->size = size;
    n->mtim = n->ctim = now();
    return OK;
}

static int32_t read_at(struct node *n, const __wasi_iovec_t *iov, size_t iovcnt, uint64_t off, size_t *got)
{
    size_t total = 0;
    for (size_t i = 0; i < iovcnt; i++) {
        if (off >= n->size)
            break;
        size_t k = iov[i].buf_len;
        if ((uint64_t)k > n->size - off)
            k = (size_t)(n->size - off);
        memcpy(iov[i].buf, n->data + off, k);
        off += k;
        total += k;
    }
    *got = total;
    n->atim = now();
    return OK;
}

static int32_t write_at(struct node *n, const __wasi_ciovec_t *iov, size_t iovcnt, uint64_t off, size_t *put)
{
    uint64_t end = off;
    for (size_t i = 0; i < iovcnt; i++)
        end += iov[i].buf_len;
    if (end > n->size) {
        int e = grow(n, end);
        if (e != OK)
            return e;
        if (off > n->size)
            memset(n->data + n->size, 0, (size_t)(off - n->size));
    }
    size_t total = 0;
    for (size_t i = 0; i < iovcnt; i++) {
        memcpy(n->data + off, iov[i].buf, iov[i].buf_len);
        off += iov[i].buf_len;
        total += iov[i].buf_len;
    }
    if (off > n->size)
        n->size = off;
    n->mtim = n->ctim = now();
    *put = total;
    return OK;
}

static void stat_node(const struct node *n, __wasi_filestat_t *st)
{
    memset(st, 0, sizeof *st);
    st->dev = 1;
    st->ino = n->ino;
    st->filetype = n->type;
    st->nlink = n->parent != NULL || n == root ? 1 : 0;
    st->size = n->type == __WASI_FILETYPE_REGULAR_FILE ? n->size : 4096;
    st->atim = n->atim;
    st->mtim = n->mtim;
    st->ctim = n->ctim;
}

/* --- WASI: descriptors. --- */

int32_t WASI(fd_prestat_get)(int32_t fd, int32_t out)
{
    ensure_tree();
    if (fd != FD_ROOT || fds[FD_ROOT].node != root)
        return E_BADF;
    __wasi_prestat_t *p = PTR(out);
    p->tag = __WASI_PREOPENTYPE_DIR;
    p->u.dir.pr_name_len = 1;
    return OK;
}

int32_t WASI(fd_prestat_dir_name)(int32_t fd, int32_t path, int32_t len)
{
    ensure_tree();
    if (fd != FD_ROOT || fds[FD_ROOT].node != root)
        return E_BADF;
    if (len < 1)
        return E_INVAL;
    *(char *)PTR(path) = '/';
    return OK;
}

int32_t WASI(fd_fdstat_get)(int32_t fd, int32_t out)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    __wasi_fdstat_t *st = PTR(out);
    memset(st, 0, sizeof *st);
    st->fs_filetype = d->node == NULL ? __WASI_FILETYPE_CHARACTER_DEVICE : d->node->type;
    st->fs_flags = d->flags;
    st->fs_rights_base = d->rights;
    st->fs_rights_inheriting = d->node != NULL && d->node->type == __WASI_FILETYPE_DIRECTORY ? dir_rights | file_rights : 0;
    return OK;
}

int32_t WASI(fd_fdstat_set_flags)(int32_t fd, int32_t flags)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    d->flags = (uint16_t)flags & __WASI_FDFLAGS_APPEND;
    return OK;
}

int32_t WASI(fd_close)(int32_t fd)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    struct node *n = d->node;
    *d = (struct fdesc){0};
    if (n != NULL) {
        n->open--;
        release(n);
    }
    return OK;
}

int32_t WASI(fd_filestat_get)(int32_t fd, int32_t out)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    if (d->node == NULL) {
        __wasi_filestat_t *st = PTR(out);
        memset(st, 0, sizeof *st);
        st->filetype = __WASI_FILETYPE_CHARACTER_DEVICE;
        st->nlink = 1;
        st->ino = (uint64_t)fd + 1000000;
        return OK;
    }
    stat_node(d->node, PTR(out));
    return OK;
}

int32_t WASI(fd_filestat_set_size)(int32_t fd, int64_t size)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || d->node == NULL)
        return E_BADF;
    if (d->node->type != __WASI_FILETYPE_REGULAR_FILE || !(d->rights & __WASI_RIGHTS_FD_WRITE))
        return E_INVAL;
    if (size < 0)
        return E_INVAL;
    return set_size(d->node, (uint64_t)size);
}

static void set_times(struct node *n, int64_t atim, int64_t mtim, int32_t flags)
{
    uint64_t t = (flags & (__WASI_FSTFLAGS_ATIM_NOW | __WASI_FSTFLAGS_MTIM_NOW)) ? now() : 0;
    if (flags & __WASI_FSTFLAGS_ATIM)
        n->atim = (uint64_t)atim;
    if (flags & __WASI_FSTFLAGS_ATIM_NOW)
        n->atim = t;
    if (flags & __WASI_FSTFLAGS_MTIM)
        n->mtim = (uint64_t)mtim;
    if (flags & __WASI_FSTFLAGS_MTIM_NOW)
        n->mtim = t;
}

int32_t WASI(fd_filestat_set_times)(int32_t fd, int64_t atim, int64_t mtim, int32_t flags)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    if (d->node != NULL)
        set_times(d->node, atim, mtim, flags);
    return OK;
}

int32_t WASI(fd_read)(int32_t fd, int32_t iovs, int32_t n, int32_t nread)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || !(d->rights & __WASI_RIGHTS_FD_READ))
        return E_BADF;
    size_t got = 0;
    if (d->node == NULL) { /* stdin: empty */
        *(uint32_t *)PTR(nread) = 0;
        return OK;
    }
    if (d->node->type == __WASI_FILETYPE_DIRECTORY)
        return E_ISDIR;
    int32_t e = read_at(d->node, PTR(iovs), (size_t)(uint32_t)n, d->off, &got);
    if (e == OK)
        d->off += got;
    *(uint32_t *)PTR(nread) = (uint32_t)got;
    return e;
}

int32_t WASI(fd_pread)(int32_t fd, int32_t iovs, int32_t n, int64_t off, int32_t nread)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || !(d->rights & __WASI_RIGHTS_FD_READ))
        return E_BADF;
    if (d->node == NULL)
        return E_SPIPE;
    if (d->node->type == __WASI_FILETYPE_DIRECTORY)
        return E_ISDIR;
    if (off < 0)
        return E_INVAL;
    size_t got = 0;
    int32_t e = read_at(d->node, PTR(iovs), (size_t)(uint32_t)n, (uint64_t)off, &got);
    *(uint32_t *)PTR(nread) = (uint32_t)got;
    return e;
}

int32_t WASI(fd_write)(int32_t fd, int32_t iovs, int32_t n, int32_t nwritten)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || !(d->rights & __WASI_RIGHTS_FD_WRITE))
        return E_BADF;
    if (d->node == NULL) /* stdout, stderr: the call's log */
        return host_fd_write(fd, iovs, n, nwritten);
    struct node *f = d->node;
    uint64_t off = (d->flags & __WASI_FDFLAGS_APPEND) ? f->size : d->off;
    size_t put = 0;
    int32_t e = write_at(f, PTR(iovs), (size_t)(uint32_t)n, off, &put);
    if (e == OK)
        d->off = off + put;
    *(uint32_t *)PTR(nwritten) = (uint32_t)put;
    return e;
}

int32_t WASI(fd_pwrite)(int32_t fd, int32_t iovs, int32_t n, int64_t off, int32_t nwritten)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || !(d->rights & __WASI_RIGHTS_FD_WRITE))
        return E_BADF;
    if (d->node == NULL)
        return E_SPIPE;
    if (off < 0)
        return E_INVAL;
    size_t put = 0;
    int32_t e = write_at(d->node, PTR(iovs), (size_t)(uint32_t)n, (uint64_t)off, &put);
    *(uint32_t *)PTR(nwritten) = (uint32_t)put;
    return e;
}

int32_t WASI(fd_seek)(int32_t fd, int64_t off, int32_t whence, int32_t out)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    if (d->node == NULL)
        return E_SPIPE;
    if (d->node->type == __WASI_FILETYPE_DIRECTORY)
        return E_ISDIR;
    int64_t base;
    switch (whence) {
    case __WASI_WHENCE_SET: base = 0; break;
    case __WASI_WHENCE_CUR: base = (int64_t)d->off; break;
    case __WASI_WHENCE_END: base = (int64_t)d->node->size; break;
    default: return E_INVAL;
    }
    if ((off < 0 && base + off < 0) || (off > 0 && base > INT64_MAX - off))
        return E_INVAL;
    d->off = (uint64_t)(base + off);
    *(uint64_t *)PTR(out) = d->off;
    return OK;
}

int32_t WASI(fd_tell)(int32_t fd, int32_t out)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL)
        return E_BADF;
    if (d->node == NULL)
        return E_SPIPE;
    *(uint64_t *)PTR(out) = d->off;
    return OK;
}

int32_t WASI(fd_sync)(int32_t fd) { return fd_of(fd) == NULL ? E_BADF : OK; }
int32_t WASI(fd_datasync)(int32_t fd) { return fd_of(fd) == NULL ? E_BADF : OK; }

int32_t WASI(fd_advise)(int32_t fd, int64_t off, int64_t len, int32_t advice)
{
    (void)off, (void)len, (void)advice;
    return fd_of(fd) == NULL ? E_BADF : OK;
}

int32_t WASI(fd_allocate)(int32_t fd, int64_t off, int64_t len)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || d->node == NULL)
        return E_BADF;
    if (d->node->type != __WASI_FILETYPE_REGULAR_FILE)
        return E_INVAL;
    if (off < 0 || len <= 0 || off > INT64_MAX - len)
        return E_INVAL;
    uint64_t end = (uint64_t)(off + len);
    return end > d->node->size ? set_size(d->node, end) : OK;
}

/* fd_readdir writes dirents from position cookie: 0 ".", 1 "..", then the
 * entries in order. As in WASI, the last one may be cut off by buf_len. */
int32_t WASI(fd_readdir)(int32_t fd, int32_t buf, int32_t buf_len, int64_t cookie, int32_t used)
{
    struct fdesc *d = fd_of(fd);
    if (d == NULL || d->node == NULL)
        return E_BADF;
    struct node *dir = d->node;
    if (dir->type != __WASI_FILETYPE_DIRECTORY)
        return E_NOTDIR;
    unsigned char *p = PTR(buf);
    size_t cap = (size_t)(uint32_t)buf_len, at = 0;
    uint64_t i = 0;
    struct node *c = dir->child;
    for (;; i++) {
        const char *name;
        size_t nlen;
        const struct node *n;
        if (i == 0) {
            name = ".", nlen = 1, n = dir;
        } else if (i == 1) {
            name = "..", nlen = 2, n = dir->parent != NULL ? dir->parent : dir;
        } else {
            if (c == NULL)
                break;
            name = c->name, nlen = strlen(c->name), n = c;
            c = c->next;
        }
        if (i < (uint64_t)cookie)
            continue;
        __wasi_dirent_t de = {.d_next = i + 1, .d_ino = n->ino, .d_namlen = (uint32_t)nlen, .d_type = n->type};
        size_t k = sizeof de < cap - at ? sizeof de : cap - at;
        memcpy(p + at, &de, k);
        at += k;
        k = nlen < cap - at ? nlen : cap - at;
        memcpy(p + at, name, k);
        at += k;
        if (at == cap)
            break;
    }
    *(uint32_t *)PTR(used) = (uint32_t)at;
    return OK;
}

/* --- WASI: paths. --- */

int32_t WASI(path_open)(int32_t dirfd, int32_t dirflags, int32_t path, int32_t path_len, int32_t oflags,
                        int64_t rights_base, int64_t rights_inheriting, int32_t fdflags, int32_t out)
{
    (void)dirflags, (void)rights_inheriting;
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(dirfd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    uint64_t rights = (uint64_t)rights_base;
    int want_write = (rights & (__WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_ALLOCATE | __WASI_RIGHTS_FD_FILESTAT_SET_SIZE)) != 0;
    if (n == NULL) {
        if (!(oflags & __WASI_OFLAGS_CREAT))
            return E_NOENT;
        if (oflags & __WASI_OFLAGS_DIRECTORY)
            return E_INVAL;
        if (nlen == 0)
            return E_ISDIR;
        n = new_node(__WASI_FILETYPE_REGULAR_FILE);
        if (n == NULL)
            return E_NOSPC;
        if ((e = attach(parent, n, name, nlen)) != OK) {
            free_node(n);
            return e;
        }
    } else {
        if ((oflags & __WASI_OFLAGS_CREAT) && (oflags & __WASI_OFLAGS_EXCL))
            return E_EXIST;
        if (n->type == __WASI_FILETYPE_DIRECTORY) {
            if (want_write || (oflags & __WASI_OFLAGS_TRUNC))
                return E_ISDIR;
        } else if (oflags & __WASI_OFLAGS_DIRECTORY) {
            return E_NOTDIR;
        } else if (oflags & __WASI_OFLAGS_TRUNC) {
            if (!want_write)
                return E_ACCES;
            n->size = 0;
            n->mtim = n->ctim = now();
        }
    }
    int fd = -1;
    for (int i = FD_ROOT + 1; i < MAX_FDS; i++)
        if (!fds[i].used) {
            fd = i;
            break;
        }
    if (fd < 0) {
        release(n);
        return E_MFILE;
    }
    uint64_t allowed = n->type == __WASI_FILETYPE_DIRECTORY ? dir_rights | (file_rights & ~(uint64_t)__WASI_RIGHTS_FD_WRITE) : file_rights;
    fds[fd] = (struct fdesc){.node = n, .used = 1, .flags = (uint16_t)fdflags & __WASI_FDFLAGS_APPEND, .rights = rights & allowed};
    n->open++;
    *(uint32_t *)PTR(out) = (uint32_t)fd;
    return OK;
}

int32_t WASI(path_filestat_get)(int32_t fd, int32_t flags, int32_t path, int32_t path_len, int32_t out)
{
    (void)flags;
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(fd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    if (n == NULL)
        return E_NOENT;
    stat_node(n, PTR(out));
    return OK;
}

int32_t WASI(path_filestat_set_times)(int32_t fd, int32_t flags, int32_t path, int32_t path_len,
                                      int64_t atim, int64_t mtim, int32_t fst)
{
    (void)flags;
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(fd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    if (n == NULL)
        return E_NOENT;
    set_times(n, atim, mtim, fst);
    return OK;
}

int32_t WASI(path_create_directory)(int32_t fd, int32_t path, int32_t path_len)
{
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(fd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    if (n != NULL)
        return E_EXIST;
    n = new_node(__WASI_FILETYPE_DIRECTORY);
    if (n == NULL)
        return E_NOSPC;
    if ((e = attach(parent, n, name, nlen)) != OK)
        free_node(n);
    return e;
}

int32_t WASI(path_remove_directory)(int32_t fd, int32_t path, int32_t path_len)
{
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(fd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    if (n == NULL)
        return E_NOENT;
    if (n->type != __WASI_FILETYPE_DIRECTORY)
        return E_NOTDIR;
    if (n == root || nlen == 0)
        return E_BUSY;
    if (n->child != NULL)
        return E_NOTEMPTY;
    detach(n);
    release(n);
    return OK;
}

int32_t WASI(path_unlink_file)(int32_t fd, int32_t path, int32_t path_len)
{
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(fd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    if (n == NULL)
        return E_NOENT;
    if (n->type == __WASI_FILETYPE_DIRECTORY)
        return E_ISDIR;
    detach(n);
    release(n);
    return OK;
}

int32_t WASI(path_rename)(int32_t fd, int32_t old_path, int32_t old_len, int32_t new_fd, int32_t new_path, int32_t new_len)
{
    struct node *op, *on, *np, *nn;
    const char *oname, *nname;
    size_t olen, nlen;
    int e = resolve_fd(fd, old_path, old_len, &op, &oname, &olen, &on);
    if (e != OK)
        return e;
    if (on == NULL)
        return E_NOENT;
    if ((e = resolve_fd(new_fd, new_path, new_len, &np, &nname, &nlen, &nn)) != OK)
        return e;
    if (on == root || olen == 0 || nlen == 0)
        return E_BUSY;
    if (on == nn)
        return OK;
    /* A directory cannot move into itself. */
    for (struct node *a = np; a != NULL; a = a->parent)
        if (a == on)
            return E_INVAL;
    if (nn != NULL) {
        if (on->type == __WASI_FILETYPE_DIRECTORY) {
            if (nn->type != __WASI_FILETYPE_DIRECTORY)
                return E_NOTDIR;
            if (nn->child != NULL)
                return E_NOTEMPTY;
        } else if (nn->type == __WASI_FILETYPE_DIRECTORY) {
            return E_ISDIR;
        }
    }
    char *s = malloc(nlen + 1);
    if (s == NULL)
        return E_NOMEM;
    memcpy(s, nname, nlen);
    s[nlen] = 0;
    if (nn != NULL) {
        detach(nn);
        release(nn);
    }
    detach(on);
    on->name = s;
    on->parent = np;
    on->next = np->child;
    np->child = on;
    np->mtim = on->ctim = now();
    return OK;
}

int32_t WASI(path_readlink)(int32_t fd, int32_t path, int32_t path_len, int32_t buf, int32_t buf_len, int32_t used)
{
    (void)buf, (void)buf_len, (void)used;
    struct node *parent, *n;
    const char *name;
    size_t nlen;
    int e = resolve_fd(fd, path, path_len, &parent, &name, &nlen, &n);
    if (e != OK)
        return e;
    return n == NULL ? E_NOENT : E_INVAL; /* nothing is a symbolic link */
}

int32_t WASI(path_symlink)(int32_t old_path, int32_t old_len, int32_t fd, int32_t new_path, int32_t new_len)
{
    (void)old_path, (void)old_len, (void)fd, (void)new_path, (void)new_len;
    return E_NOTSUP;
}

int32_t WASI(path_link)(int32_t old_fd, int32_t old_flags, int32_t old_path, int32_t old_len,
                        int32_t new_fd, int32_t new_path, int32_t new_len)
{
    (void)old_fd, (void)old_flags, (void)old_path, (void)old_len, (void)new_fd, (void)new_path, (void)new_len;
    return E_NOTSUP;
}

/* --- WASI: the rest. --- */

int32_t WASI(args_sizes_get)(int32_t argc, int32_t size)
{
    *(uint32_t *)PTR(argc) = 0;
    *(uint32_t *)PTR(size) = 0;
    return OK;
}

int32_t WASI(args_get)(int32_t argv, int32_t buf)
{
    (void)argv, (void)buf;
    return OK;
}

int32_t WASI(environ_sizes_get)(int32_t count, int32_t size) { return host_environ_sizes_get(count, size); }
int32_t WASI(environ_get)(int32_t environ, int32_t buf) { return host_environ_get(environ, buf); }
int32_t WASI(clock_time_get)(int32_t id, int64_t precision, int32_t out) { return host_clock_time_get(id, precision, out); }
int32_t WASI(clock_res_get)(int32_t id, int32_t out) { return host_clock_res_get(id, out); }
int32_t WASI(random_get)(int32_t buf, int32_t len) { return host_random_get(buf, len); }
int32_t WASI(sched_yield)(void) { return OK; }

/* poll_oneoff: clocks only (time.sleep); the host sleeps or not, per the
 * manifest. Descriptor subscriptions are refused. */
int32_t WASI(poll_oneoff)(int32_t in, int32_t out, int32_t n, int32_t nevents)
{
    const __wasi_subscription_t *s = PTR(in);
    for (int32_t i = 0; i < n; i++)
        if (s[i].u.tag != __WASI_EVENTTYPE_CLOCK)
            return E_NOTSUP;
    return host_poll_oneoff(in, out, n, nevents);
}

/* proc_exit: a function cannot end its call but by returning; this traps
 * (nothing in the engine calls it: sys.exit raises SystemExit, which the
 * runtime answers as an exception). */
_Noreturn void WASI(proc_exit)(int32_t code)
{
    (void)code;
    __builtin_trap();
}
