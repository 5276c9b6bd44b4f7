/* The vxlan end's per-byte work in C: a TCP super-frame cut into wire-sized segments, and
 * segments from the tunnel merged into one super-frame. These are core/offload.segment_tcp
 * and core/vxlan.merge_tcp, which stay the reference (with numpy, used when this module is
 * not built); tests/unit/test_offload_c.py holds the two to the same bytes.
 *
 * Both are pure: buffers in, buffers out, no I/O. The cost is the sum over every payload
 * byte. It is taken here on 64-bit loads, two 32-bit halves added into a 64-bit
 * accumulator: the sum of native 16-bit words mod 0xFFFF, which a byte swap (x 256, since
 * 256 * 256 = 1 mod 0xFFFF) makes the big-endian sum of RFC 1071 (section 2(B)). Checksums
 * are written as 0xFFFF minus the sum mod 0xFFFF, as the Python does: a sum of zero gives
 * 0xFFFF, never 0x0000 (both mean the same to a receiver, RFC 1624).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define ETH_HLEN 14
#define VXLAN_HLEN 8
#define VXLAN_FLAG_I 0x08
#define IPPROTO_TCP_ 6

static const uint8_t BFD_MAC[6] = {0x00, 0x52, 0x02, 0x00, 0x00, 0x00};

/* The sum of data's native 16-bit words, not folded (at most 64 KiB + headers: no overflow).
 * Bytes past an odd length count as zero, as RFC 1071 pads. */
static uint64_t sum_native(const uint8_t *p, size_t n) {
    uint64_t acc = 0;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        acc += (w & 0xFFFFFFFFu) + (w >> 32);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n); /* the tail at the same parity: zeros add nothing */
        acc += (w & 0xFFFFFFFFu) + (w >> 32);
    }
    return acc;
}

/* The big-endian one's complement sum of data, as a residue mod 0xFFFF (core/offload.ones_sum). */
static uint32_t ones_sum(const uint8_t *p, size_t n) {
    uint32_t r = (uint32_t)(sum_native(p, n) % 0xFFFF);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    r = (r * 256u) % 0xFFFF;
#endif
    return r;
}

static inline unsigned u16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static inline void put16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline uint32_t u32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* 0xFFFF minus a sum's residue: the checksum field for a header whose field was zero. */
static inline unsigned checksum_of(uint64_t residue_sum) {
    return 0xFFFFu - (unsigned)(residue_sum % 0xFFFF);
}

static PyObject *fail(const char *why) {
    PyErr_SetString(PyExc_ValueError, why);
    return NULL;
}

/* segment_tcp(frame, l4, mss, prefix, out) -> (count, full, total): see core/offload.py. */
static PyObject *m_segment_tcp(PyObject *self, PyObject *args) {
    Py_buffer fb, pb, ob;
    Py_ssize_t l4_, mss_;
    if (!PyArg_ParseTuple(args, "y*nny*w*", &fb, &l4_, &mss_, &pb, &ob))
        return NULL;
    PyObject *result = NULL;
    const uint8_t *f = fb.buf;
    size_t n = (size_t)fb.len, p = (size_t)pb.len;
    int v4 = n >= ETH_HLEN && f[12] == 0x08 && f[13] == 0x00;
    int v6 = n >= ETH_HLEN && f[12] == 0x86 && f[13] == 0xdd;
    if (!v4 && !v6) {
        fail("not IPv4 or IPv6");
        goto out;
    }
    /* the Python reads these bytes unchecked (an IndexError there; the caller has already
     * refused runts): short frames are refused here as truncated */
    if (n < ETH_HLEN + 40 || l4_ < 0) {
        fail("truncated");
        goto out;
    }
    if (v4 && (f[14] >> 4 != 4 || f[23] != IPPROTO_TCP_ || l4_ != ETH_HLEN + (f[14] & 0x0F) * 4)) {
        fail("not TCP over IPv4");
        goto out;
    }
    if (v6 && (f[14] >> 4 != 6 || f[20] != IPPROTO_TCP_ || l4_ != ETH_HLEN + 40)) {
        fail("not TCP over IPv6");
        goto out;
    }
    size_t l4 = (size_t)l4_;
    if (mss_ <= 0 || l4 + 20 > n) {
        fail("truncated");
        goto out;
    }
    size_t mss = (size_t)mss_;
    size_t doff = (size_t)(f[l4 + 12] >> 4) * 4, hlen = l4 + doff;
    if (doff < 20 || hlen > n) {
        fail("truncated");
        goto out;
    }
    size_t plen = n - hlen;
    size_t count = plen ? (plen + mss - 1) / mss : 1;
    size_t last_len = plen - mss * (count - 1);
    size_t row = p + hlen + mss;
    size_t need = row * (count - 1) + p + hlen + last_len;
    if ((size_t)ob.len < need) {
        fail("output buffer too small");
        goto out;
    }
    uint8_t *o = ob.buf;
    unsigned flags = f[l4 + 13];
    uint32_t seq0 = u32(f + l4 + 4);
    unsigned ip_id = v4 ? u16(f + 18) : 0;
    size_t ip = p + ETH_HLEN, tcp = p + l4; /* where the headers start in a datagram */
    /* what every segment's pseudo-header holds but its TCP length */
    uint64_t pseudo = (v4 ? ones_sum(f + 26, 8) : ones_sum(f + 22, 32)) + IPPROTO_TCP_;

    for (size_t i = 0; i < count; i++) {
        uint8_t *d = o + i * row;
        size_t len = i + 1 < count ? mss : last_len;
        memcpy(d, pb.buf, p);
        memcpy(d + p, f, hlen);
        memcpy(d + p + hlen, f + hlen + i * mss, len);
        /* FIN and PSH on the last segment only, CWR on the first only */
        unsigned bits = flags & 0x76;
        if (i == 0)
            bits |= flags & 0x80;
        if (i + 1 == count)
            bits |= flags & 0x09;
        d[tcp + 13] = (uint8_t)bits;
        put32(d + tcp + 4, seq0 + (uint32_t)(i * mss));
        put16(d + tcp + 16, 0);
        if (v4) {
            put16(d + ip + 2, (unsigned)(l4 - ETH_HLEN + doff + len));
            put16(d + ip + 4, (ip_id + (unsigned)i) & 0xFFFF);
            put16(d + ip + 10, 0);
            put16(d + ip + 10, checksum_of(ones_sum(d + ip, l4 - ETH_HLEN)));
        } else {
            put16(d + ip + 4, (unsigned)(doff + len));
        }
        uint64_t sum = pseudo + doff + len + ones_sum(d + tcp, doff + len);
        put16(d + tcp + 16, checksum_of(sum));
    }
    result = Py_BuildValue("nnn", (Py_ssize_t)count, (Py_ssize_t)row, (Py_ssize_t)need);
out:
    PyBuffer_Release(&fb);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&ob);
    return result;
}

/* Whether datagram d (VXLAN header first) may join a merge whose first datagram is d0: its
 * headers equal d0's but for what varies from one segment to the next (core/vxlan's
 * _merge_mask), ACK or PSH|ACK, the sequence that follows, and correct checksums. */
static int mergeable(const uint8_t *d, const uint8_t *d0, size_t size, size_t l4, size_t hlen,
                     int v4, uint32_t want_seq) {
    const uint8_t *in = d + VXLAN_HLEN, *in0 = d0 + VXLAN_HLEN;
    if (d[0] & VXLAN_FLAG_I) {
        if (memcmp(d + 4, d0 + 4, 3))
            return 0;
    } else {
        return 0;
    }
    if ((in[l4 + 13] | 0x08) != 0x18)
        return 0;
    if (u32(in + l4 + 4) != want_seq)
        return 0;
    /* header bytes: all equal but IPv4 id (18-19) and checksum (24-25), TCP sequence
     * (l4+4..7), flags (l4+13) and checksum (l4+16..17) */
    if (v4) {
        if (memcmp(in, in0, 18) || memcmp(in + 20, in0 + 20, 4) ||
            memcmp(in + 26, in0 + 26, l4 + 4 - 26))
            return 0;
    } else if (memcmp(in, in0, l4 + 4)) {
        return 0;
    }
    if (memcmp(in + l4 + 8, in0 + l4 + 8, 5) || memcmp(in + l4 + 14, in0 + l4 + 14, 2) ||
        memcmp(in + l4 + 18, in0 + l4 + 18, hlen - l4 - 18))
        return 0;
    /* a correct checksum sums to 0 mod 0xFFFF */
    uint64_t addrs = v4 ? ones_sum(in + 26, 8) : ones_sum(in + 22, 32);
    if (v4 && (ones_sum(in + ETH_HLEN, 12) + addrs) % 0xFFFF)
        return 0;
    size_t tcp_len = size - VXLAN_HLEN - l4;
    return (addrs + ones_sum(in + l4, tcp_len) + IPPROTO_TCP_ + tcp_len) % 0xFFFF == 0;
}

/* merge_tcp(data, size, count, vni_field, out) -> (merged, frame_len, l4, mss): see
 * core/vxlan.py. */
static PyObject *m_merge_tcp(PyObject *self, PyObject *args) {
    Py_buffer db, vb, ob;
    Py_ssize_t size_, count_;
    if (!PyArg_ParseTuple(args, "y*nny*w*", &db, &size_, &count_, &vb, &ob))
        return NULL;
    PyObject *result = NULL;
    const uint8_t *data = db.buf;
    size_t merged = 0, length = 0, l4 = 0, mss = 0;
    if (count_ < 2 || size_ % 2 || size_ < VXLAN_HLEN + ETH_HLEN + 40 + 20)
        goto done;
    size_t size = (size_t)size_, count = (size_t)count_;
    if (size > (size_t)db.len)
        goto done; /* not even one datagram: nothing to merge */
    if (vb.len != 3 || !(data[0] & VXLAN_FLAG_I) || memcmp(data + 4, vb.buf, 3))
        goto done;
    const uint8_t *in = data + VXLAN_HLEN;
    if (in[12] == 0x08 && in[13] == 0x00 && in[14] == 0x45 && in[23] == IPPROTO_TCP_)
        l4 = ETH_HLEN + 20;
    else if (in[12] == 0x86 && in[13] == 0xdd && in[14] >> 4 == 6 && in[20] == IPPROTO_TCP_)
        l4 = ETH_HLEN + 40;
    else
        goto done;
    int v4 = l4 == ETH_HLEN + 20;
    size_t doff = (size_t)(in[l4 + 12] >> 4) * 4, hlen = l4 + doff;
    if (doff < 20 || hlen + VXLAN_HLEN >= size || !memcmp(in, BFD_MAC, 6))
        goto done;
    mss = size - VXLAN_HLEN - hlen;
    if (v4) {
        if ((in[20] & 0x3F) || in[21] || u16(in + 16) != size - VXLAN_HLEN - ETH_HLEN)
            goto done;
    } else if (u16(in + 18) != size - VXLAN_HLEN - ETH_HLEN - 40) {
        goto done;
    }
    size_t cap = (0xFFFF - (hlen - ETH_HLEN)) / mss; /* an IP length must hold the merge */
    if (count > cap)
        count = cap;
    if (count * size > (size_t)db.len) {
        fail("data shorter than count datagrams");
        goto out;
    }
    uint32_t seq0 = u32(in + l4 + 4);
    size_t run = 0;
    while (run < count) {
        const uint8_t *d = data + run * size;
        if (!mergeable(d, data, size, l4, hlen, v4, seq0 + (uint32_t)(run * mss)))
            break;
        run++;
        if (d[VXLAN_HLEN + l4 + 13] == 0x18)
            break; /* PSH ends the merge, with this segment in it */
    }
    if (run < 2)
        goto done;
    length = hlen + run * mss;
    if ((size_t)ob.len < length) {
        fail("output buffer too small");
        goto out;
    }
    uint8_t *o = ob.buf;
    memcpy(o, in, hlen);
    for (size_t j = 0; j < run; j++)
        memcpy(o + hlen + j * mss, data + j * size + VXLAN_HLEN + hlen, mss);
    o[l4 + 13] = data[(run - 1) * size + VXLAN_HLEN + l4 + 13];
    size_t seg_len = length - l4;
    uint64_t pseudo;
    if (v4) {
        put16(o + 16, (unsigned)(length - ETH_HLEN));
        put16(o + 24, 0);
        put16(o + 24, checksum_of(ones_sum(o + ETH_HLEN, l4 - ETH_HLEN)));
        pseudo = ones_sum(o + 26, 8);
    } else {
        put16(o + 18, (unsigned)(length - l4));
        pseudo = ones_sum(o + 22, 32);
    }
    unsigned field = (unsigned)((pseudo + IPPROTO_TCP_ + seg_len) % 0xFFFF);
    put16(o + l4 + 16, field ? field : 0xFFFF);
    merged = run;
done:
    if (merged < 2)
        merged = length = l4 = mss = 0;
    result = Py_BuildValue("nnnn", (Py_ssize_t)merged, (Py_ssize_t)length, (Py_ssize_t)l4,
                           (Py_ssize_t)mss);
out:
    PyBuffer_Release(&db);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&ob);
    return result;
}

static PyMethodDef methods[] = {
    {"segment_tcp", m_segment_tcp, METH_VARARGS,
     "segment_tcp(frame, l4, mss, prefix, out) -> (count, full, total)"},
    {"merge_tcp", m_merge_tcp, METH_VARARGS,
     "merge_tcp(data, size, count, vni_field, out) -> (merged, frame_len, l4, mss)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_offload",
    .m_doc = "The vxlan end's segmenting and merging of TCP in C (see tapveth/core/offload.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__offload(void) { return PyModule_Create(&module); }
