/* The plain relay path on a thread of its own, in C: wake-up, veth admission, write.
 *
 * Measured on a 2-vCPU VM: a ping through a relay whose wake-up runs Python (the event loop's
 * dispatch, then the relay) took 136-148 us at p50; the same read/write loop in C behind
 * poll() 85 us, below vde_switch's 100. After a wake-up from idle, every cache line and page
 * the interpreter touches is a miss; C touches few. So what sends with no impairment, capture
 * or cut is relayed here, by the rules of core/rules.py (admit) and relay.py, which stay the
 * reference: the conformance tests run on this path.
 *
 * The daemon (Python, the event loop's thread) owns all state; this thread only reads it and
 * counts. Every change the daemon makes is done under `lock`, which the thread holds for a
 * batch of one end: a change applies from the next batch on, as in relay.py.
 *
 * Link events: the kernel veth sees an MTU change or a peer set down before the next frame.
 * The daemon reads and applies netlink events; before each batch this thread asks the kernel
 * whether events are queued (poll, as relay.py does) and whether the daemon is applying some
 * (`applying`, set before its read and cleared after): while either holds, it waits. Asked in
 * that order (poll first), an event that the daemon has read but not applied is never missed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Counters of what one end sends, in this order (native.py names them). */
enum { C_PACKETS, C_BYTES, C_DROPPED, C_PEER_COUNTED, C_RUNT, C_MTU, C_PEER_DOWN,
       C_INVALID_HEADER, C_WRITE_ERROR, C_BATCHES, N_COUNTERS };
enum { R_NONE = -1, R_RUNT = C_RUNT, R_MTU = C_MTU, R_PEER_DOWN = C_PEER_DOWN,
       R_INVALID = C_INVALID_HEADER, R_WRITE = C_WRITE_ERROR };

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define BUF_LEN (65536 + 1024) /* a 64 KiB GSO super-frame and its virtio header */
#define EVENTS 64
#define GONE_MAX 1024

typedef struct {
    int used;
    int fd;
    int peer;   /* slot of the other end, -1 while unknown */
    int up;     /* admin-up, as a receiver */
    int mtu;    /* as a receiver */
    int owned;  /* this thread relays what the end sends (its fd is on the epoll set) */
    uint32_t gen;
    uint64_t c[N_COUNTERS];
} Slot;

static struct {
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    Slot *slots;
    int n_slots;
    int ep, kick, notify, events_fd;
    atomic_int applying;
    atomic_int stopping;
    int hdr, gso_off, gso_mask, batch;
    int64_t window_ns, gap_ns;
    struct { int slot; int err; } gone[GONE_MAX];
    int n_gone;
    unsigned char *buf;
} E = {.lock = PTHREAD_MUTEX_INITIALIZER, .ep = -1, .kick = -1};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int fatal_errno(int err) {
    /* the end's TAP is gone or unusable (core/rules.py's TAP_GONE) */
    return err == EBADFD || err == EBADF || err == EFAULT || err == ENODEV || err == EPIPE;
}

static void disown(int s) {
    if (E.slots[s].owned) {
        epoll_ctl(E.ep, EPOLL_CTL_DEL, E.slots[s].fd, NULL);
        E.slots[s].owned = 0;
    }
}

/* An end failed for good: stop relaying it and tell the daemon (under lock). */
static void gone(int s, int err) {
    disown(s);
    if (E.n_gone < GONE_MAX) {
        E.gone[E.n_gone].slot = s;
        E.gone[E.n_gone].err = err;
        E.n_gone++;
    }
    uint64_t one = 1;
    (void)!write(E.notify, &one, sizeof one);
}

/* veth_xmit's admission, as core/rules.admit. */
static int admit(ssize_t len, int gso, const Slot *dst) {
    if (len < ETH_HLEN) return R_RUNT;
    if (!dst->up) return R_PEER_DOWN;
    if (!gso && len > dst->mtu + ETH_HLEN + VLAN_HLEN) return R_MTU;
    return R_NONE;
}

/* Up to `frames` frames from src to dst: 1 if any was read, 0 if none, -1 if an end is gone. */
static int relay(int s, int d, int frames) {
    Slot *src = &E.slots[s], *dst = &E.slots[d];
    unsigned char *buf = E.buf;
    int any = 0;
    for (int i = 0; i < frames; i++) {
        ssize_t n = read(src->fd, buf, BUF_LEN);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return any;
            gone(s, errno);
            return -1;
        }
        any = 1;
        ssize_t len = n - E.hdr;
        int reason = admit(len, (buf[E.gso_off] & E.gso_mask) != 0, dst);
        if (reason == R_NONE) {
            if (write(dst->fd, buf, (size_t)n) >= 0) {
                src->c[C_PACKETS]++;
                src->c[C_BYTES] += (uint64_t)len;
                continue;
            }
            int err = errno;
            if (err == EIO) { /* tun refuses writes to an admin-down device */
                reason = R_PEER_DOWN;
                src->c[C_PEER_COUNTED]++; /* tun counted it in the peer's rx_dropped */
            } else if (err == EINVAL) {
                reason = R_INVALID;
            } else if (fatal_errno(err)) {
                gone(d, err);
                return -1;
            } else {
                reason = R_WRITE;
            }
        }
        src->c[C_DROPPED]++;
        src->c[reason]++;
    }
    return any;
}

/* A batch of src, as relay.py's pump: the first frame, then at once what its write provoked
 * on the way back (an echo reply, an ACK) when that direction is relayed here too, then the
 * rest of the batch. Called under lock. */
static void pump(int s) {
    Slot *src = &E.slots[s];
    int d = src->peer;
    if (d < 0 || !E.slots[d].used) return;
    src->c[C_BATCHES]++;
    if (relay(s, d, 1) <= 0) return;
    if (E.slots[d].owned && relay(d, s, E.batch) < 0) return;
    relay(s, d, E.batch - 1);
}

/* How long to keep polling after traffic: core/pollwindow.PollWindow, which is the reference
 * (tests/unit/test_native_relay.py drives both with the same arrivals). */
typedef struct {
    int64_t base_ns, max_gap_ns;
    int64_t last;      /* time of the previous arrival; -1: none yet */
    int64_t gap;       /* the latest idle gap worth bridging; 0: none */
    int64_t window_ns;
} PollWindow;

/* A window that polls base_ns after any frame and bridges gaps up to max_gap_ns (0: none);
 * negatives count as 0, as in PollWindow. */
static PollWindow pollwindow_new(int64_t base_ns, int64_t max_gap_ns) {
    int64_t b = base_ns > 0 ? base_ns : 0;
    return (PollWindow){.base_ns = b, .max_gap_ns = max_gap_ns > 0 ? max_gap_ns : 0,
                        .last = -1, .window_ns = b};
}

/* Traffic arrived at now: the time until which to keep polling. */
static int64_t pollwindow_arrival(PollWindow *p, int64_t now) {
    if (p->max_gap_ns > 0 && p->last >= 0) {
        int64_t g = now - p->last;
        if (g > p->window_ns) p->gap = g <= p->max_gap_ns ? g : 0; /* slept through it */
        int64_t w = p->gap * 3 / 2;
        if (w > p->max_gap_ns) w = p->max_gap_ns;
        p->window_ns = p->gap ? (w > p->base_ns ? w : p->base_ns) : p->base_ns;
    }
    p->last = now;
    return now + p->window_ns;
}

/* True while link events are queued or being applied by the daemon (see the top). */
static int events_pending(void) {
    if (E.events_fd >= 0) {
        struct pollfd p = {E.events_fd, POLLIN, 0};
        if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) return 1;
    }
    return atomic_load(&E.applying);
}

static void *run(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the daemon's (its loop's thread) */
    struct epoll_event evs[EVENTS];
    PollWindow pw = pollwindow_new(E.window_ns, E.gap_ns);
    int64_t deadline = 0;
    int polling = 0, arrived = 0;
    while (!atomic_load(&E.stopping)) {
        int n = epoll_wait(E.ep, evs, EVENTS, polling ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int traffic = 0;
        if (n > 0) {
            pthread_mutex_lock(&E.lock);
            long pause_ns = 20000; /* doubled up to 1 ms: the loop may be busy for a while */
            while (events_pending() && !atomic_load(&E.stopping)) {
                pthread_mutex_unlock(&E.lock); /* the daemon applies them: give it the CPU */
                struct timespec pause = {0, pause_ns};
                nanosleep(&pause, NULL);
                if (pause_ns < 1000000) pause_ns *= 2;
                pthread_mutex_lock(&E.lock);
            }
            for (int i = 0; i < n; i++) {
                uint64_t tag = evs[i].data.u64;
                if (tag == UINT64_MAX) { /* the daemon's kick: stop */
                    uint64_t v;
                    (void)!read(E.kick, &v, sizeof v);
                    continue;
                }
                int s = (int)(tag & 0xffffffffu);
                if (s >= E.n_slots || !E.slots[s].used || !E.slots[s].owned ||
                    E.slots[s].gen != (uint32_t)(tag >> 32))
                    continue; /* taken back by the daemon since epoll_wait returned */
                pump(s);
                traffic = 1;
            }
            pthread_mutex_unlock(&E.lock);
        }
        /* Busy-polling after traffic, as busypoll.py and core/pollwindow.py. */
        if (E.window_ns <= 0 && E.gap_ns <= 0) continue;
        int64_t t = now_ns();
        if (traffic) {
            deadline = pollwindow_arrival(&pw, t);
            polling = 1;
            arrived = 1;
        } else if (polling) {
            if (t >= deadline) {
                polling = 0;
            } else if (!arrived) {
                sched_yield(); /* a quiet tick: let a task our frame woke run (busypoll.py) */
            }
            arrived = 0;
        }
    }
    return NULL;
}

/* ---- the daemon's side (Python, the loop's thread) ---- */

/* The lock, waited for without the GIL: the thread may hold it for a batch. */
static void lock(void) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&E.lock);
    Py_END_ALLOW_THREADS
}

static void unlock(void) { pthread_mutex_unlock(&E.lock); }

static PyObject *no_slot(int s) {
    PyErr_Format(PyExc_ValueError, "no slot %d", s);
    return NULL;
}

static void kick(void) {
    uint64_t one = 1;
    (void)!write(E.kick, &one, sizeof one);
}

static PyObject *m_start(PyObject *self, PyObject *args) {
    int events_fd, notify, hdr, gso_off, gso_mask, batch;
    long long window_ns, gap_ns;
    if (!PyArg_ParseTuple(args, "iiiiiiLL", &events_fd, &notify, &hdr, &gso_off, &gso_mask,
                          &batch, &window_ns, &gap_ns))
        return NULL;
    if (E.running) {
        PyErr_SetString(PyExc_RuntimeError, "the native relay runs already");
        return NULL;
    }
    E.buf = malloc(BUF_LEN);
    E.ep = epoll_create1(EPOLL_CLOEXEC);
    E.kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!E.buf || E.ep < 0 || E.kick < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(E.ep, EPOLL_CTL_ADD, E.kick, &ev);
    E.events_fd = events_fd;
    E.notify = notify;
    E.hdr = hdr;
    E.gso_off = gso_off;
    E.gso_mask = gso_mask;
    E.batch = batch;
    E.window_ns = window_ns;
    E.gap_ns = gap_ns;
    atomic_store(&E.stopping, 0);
    atomic_store(&E.applying, 0);
    int rc = pthread_create(&E.thread, NULL, run, NULL);
    if (rc) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    pthread_setname_np(E.thread, "tapveth-relay"); /* as ps -L and /proc show it */
    E.running = 1;
    Py_RETURN_NONE;
}

static PyObject *m_stop(PyObject *self, PyObject *noargs) {
    if (!E.running) Py_RETURN_NONE;
    atomic_store(&E.stopping, 1);
    kick();
    Py_BEGIN_ALLOW_THREADS
    pthread_join(E.thread, NULL);
    Py_END_ALLOW_THREADS
    E.running = 0;
    close(E.ep);
    close(E.kick);
    E.ep = E.kick = -1;
    free(E.buf);
    E.buf = NULL;
    free(E.slots);
    E.slots = NULL;
    E.n_slots = 0;
    E.n_gone = 0;
    Py_RETURN_NONE;
}

static PyObject *m_add(PyObject *self, PyObject *args) {
    int fd, s = -1;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    int failed = 0;
    lock();
    {
        for (int i = 0; i < E.n_slots; i++)
            if (!E.slots[i].used) { s = i; break; }
        if (s < 0) {
            int n = E.n_slots ? E.n_slots * 2 : 64;
            Slot *grown = realloc(E.slots, (size_t)n * sizeof(Slot));
            if (!grown) {
                failed = 1;
            } else {
                memset(grown + E.n_slots, 0, (size_t)(n - E.n_slots) * sizeof(Slot));
                s = E.n_slots;
                E.slots = grown;
                E.n_slots = n;
            }
        }
        if (!failed) {
            uint32_t gen = E.slots[s].gen + 1;
            memset(&E.slots[s], 0, sizeof(Slot));
            E.slots[s] = (Slot){.used = 1, .fd = fd, .peer = -1, .mtu = 1500, .gen = gen};
        }
    }
    unlock();
    if (failed) return PyErr_NoMemory();
    return PyLong_FromLong(s);
}

static PyObject *m_remove(PyObject *self, PyObject *args) {
    int s, ok = 1;
    if (!PyArg_ParseTuple(args, "i", &s)) return NULL;
    lock();
    {
        if (s < 0 || s >= E.n_slots || !E.slots[s].used) {
            ok = 0;
        } else {
            disown(s);
            E.slots[s].used = 0;
            for (int i = 0; i < E.n_slots; i++)
                if (E.slots[i].used && E.slots[i].peer == s) E.slots[i].peer = -1;
        }
    }
    unlock();
    if (!ok) return no_slot(s);
    Py_RETURN_NONE;
}

static PyObject *m_configure(PyObject *self, PyObject *args) {
    int s, peer, up, mtu, ok = 1;
    if (!PyArg_ParseTuple(args, "iipi", &s, &peer, &up, &mtu)) return NULL;
    lock();
    {
        if (s < 0 || s >= E.n_slots || !E.slots[s].used) {
            ok = 0;
        } else {
            E.slots[s].peer = peer;
            E.slots[s].up = up;
            E.slots[s].mtu = mtu;
        }
    }
    unlock();
    if (!ok) return no_slot(s);
    Py_RETURN_NONE;
}

static PyObject *m_own(PyObject *self, PyObject *args) {
    int s, own, ok = 1, err = 0;
    if (!PyArg_ParseTuple(args, "ip", &s, &own)) return NULL;
    lock();
    {
        if (s < 0 || s >= E.n_slots || !E.slots[s].used) {
            ok = 0;
        } else if (own && !E.slots[s].owned) {
            struct epoll_event ev = {.events = EPOLLIN,
                                     .data.u64 = ((uint64_t)E.slots[s].gen << 32) | (uint32_t)s};
            if (epoll_ctl(E.ep, EPOLL_CTL_ADD, E.slots[s].fd, &ev) < 0)
                err = errno;
            else
                E.slots[s].owned = 1;
        } else if (!own) {
            disown(s);
        }
    }
    unlock();
    if (!ok) return no_slot(s);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE; /* an fd added while the thread sleeps wakes it if it is readable */
}

static PyObject *m_take(PyObject *self, PyObject *args) {
    /* the counters counted since the last take, zeroed */
    int s, ok = 1;
    uint64_t c[N_COUNTERS];
    if (!PyArg_ParseTuple(args, "i", &s)) return NULL;
    lock();
    {
        if (s < 0 || s >= E.n_slots || !E.slots[s].used) {
            ok = 0;
        } else {
            memcpy(c, E.slots[s].c, sizeof c);
            memset(E.slots[s].c, 0, sizeof c);
        }
    }
    unlock();
    if (!ok) return no_slot(s);
    PyObject *t = PyTuple_New(N_COUNTERS);
    if (!t) return NULL;
    for (int i = 0; i < N_COUNTERS; i++)
        PyTuple_SET_ITEM(t, i, PyLong_FromUnsignedLongLong(c[i]));
    return t;
}

static PyObject *m_gone(PyObject *self, PyObject *noargs) {
    uint64_t v;
    (void)!read(E.notify, &v, sizeof v);
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    int n = 0, slots[GONE_MAX], errs[GONE_MAX];
    lock();
    {
        n = E.n_gone;
        for (int i = 0; i < n; i++) {
            slots[i] = E.gone[i].slot;
            errs[i] = E.gone[i].err;
        }
        E.n_gone = 0;
    }
    unlock();
    for (int i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue("(ii)", slots[i], errs[i]);
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *m_applying(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    atomic_store(&E.applying, on);
    Py_RETURN_NONE;
}

/* The poll deadlines after arrivals at the given times, for the tests that hold this twin of
 * core/pollwindow.py to it. */
static PyObject *m_poll_deadlines(PyObject *self, PyObject *args) {
    long long base, max_gap;
    PyObject *times;
    if (!PyArg_ParseTuple(args, "LLO", &base, &max_gap, &times)) return NULL;
    PyObject *seq = PySequence_Fast(times, "arrival times must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (!out) {
        Py_DECREF(seq);
        return NULL;
    }
    PollWindow pw = pollwindow_new(base, max_gap);
    for (Py_ssize_t i = 0; i < n; i++) {
        long long t = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        PyObject *d = t == -1 && PyErr_Occurred() ? NULL
                                                  : PyLong_FromLongLong(pollwindow_arrival(&pw, t));
        if (!d) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        PyList_SET_ITEM(out, i, d);
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"start", m_start, METH_VARARGS,
     "start(events_fd, notify_fd, hdr_len, gso_off, gso_mask, batch, window_ns, gap_ns)"},
    {"stop", m_stop, METH_NOARGS, "stop the thread and forget every slot"},
    {"add", m_add, METH_VARARGS, "add(fd) -> slot: an end, not relayed yet"},
    {"remove", m_remove, METH_VARARGS, "remove(slot): forget an end"},
    {"configure", m_configure, METH_VARARGS, "configure(slot, peer, up, mtu)"},
    {"own", m_own, METH_VARARGS, "own(slot, on): relay what the end sends here, or stop"},
    {"take", m_take, METH_VARARGS, "take(slot) -> counters since the last take"},
    {"gone", m_gone, METH_NOARGS, "gone() -> [(slot, errno)] of ends that failed"},
    {"applying", m_applying, METH_VARARGS, "applying(on): the daemon reads link events"},
    {"poll_deadlines", m_poll_deadlines, METH_VARARGS,
     "poll_deadlines(base_ns, max_gap_ns, arrivals) -> [deadline]: the busy-poll window"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_native_relay",
    .m_doc = "The plain relay path on a thread of its own (see tapveth/daemon/native.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native_relay(void) { return PyModule_Create(&module); }
