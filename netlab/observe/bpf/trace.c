// netlab packet tracer: tracepoints only (this kernel has no kprobes).
//
// Struct member offsets are NOT taken from the kernel headers: the headers on the
// machine (Debian 6.1) do not match the running kernel (6.18), so sk_buff & co.
// have a different layout. offsets.py reads the offsets from /sys/kernel/btf/vmlinux
// at run time and passes them as -D macros (OFF_*). Every kernel read is an explicit
// bpf_probe_read_kernel at base + OFF_x, never a C member access, so the bcc
// rewriter cannot smuggle in a header-derived offset.
//
// Filtering happens here: an event leaves the kernel only when its netns inode is in
// `netns_allow` and (when configured) a port / IPv4 address matches. Host traffic
// never reaches user space.
//
// Packet hooks (rx/tx) emit only what a connection timeline needs unless
// cfg.all_segments is set: every non-TCP packet; TCP segments with SYN or RST at every
// hop (rx and tx); a FIN only where a local socket sends it (tx with skb->sk set), not
// at every forwarding hop. Any other TCP segment (pure ACK, data, forwarded FIN) is
// not sent: by design (docs/events.md), not loss; it is rejected before the netns
// lookup, so it is not counted either (counting would need that lookup on every
// packet). kfree_skb is always sent except for one case that is not a packet drop:
// a socket purging its own queue at close (reason QUEUE_PURGE on an skb with no
// device, e.g. the already-acknowledged FIN still in the retransmit queue), counted
// in STAT_PURGED. Output is a ring buffer written without wakeups (user space drains
// it on a timer); a record that does not fit is counted in STAT_LOST.

#include <uapi/linux/ptrace.h>

#define K_RX 1
#define K_TX 2
#define K_DROP 3
#define K_RETRANS_SYNACK 4
#define K_SEND_RESET 5
#define K_RECV_RESET 6
#define K_SOCK_STATE 7

#define NO_HEADER 0xffff
#define AF_INET_ 2
#define PROTO_TCP 6
#define PROTO_UDP 17

struct event_t {
    u64 ts;
    u64 skbaddr;
    u64 location;
    u32 netns;
    u32 ifindex;
    u32 kind;
    u32 reason;
    u32 mark;
    u32 saddr;  // network byte order
    u32 daddr;
    u32 seq;
    u32 ack;
    u32 len;
    s32 oldstate;
    s32 newstate;
    u16 sport;  // host byte order
    u16 dport;
    u8 proto;
    u8 tcp_flags;
    u8 has_tuple;
    u8 dev_from;  // 0 none, 1 skb->dev, 2 dst->dev, 3 sock
    char ifname[16];
    u16 l3proto;  // host byte order: 0x0800 IPv4, 0x0806 ARP, 0x86dd IPv6
    u16 ip_id;  // IPv4 identification (host order): joins an nftrace packet to this one
    u32 pad1;
};

struct cfg_t {
    u32 use_port;
    u32 use_addr;
    u32 all_segments;  // 1: rx/tx emit every TCP segment, not only SYN/FIN/RST
    u32 purge_reason;  // number of QUEUE_PURGE in this kernel's table, 0 if none
};

#define TCP_FIN 0x01
#define TCP_SYN_RST 0x06  // SYN | RST
#define STAT_LOST 0
#define STAT_PURGED 1

BPF_HASH(netns_allow, u32, u8, 1024);
BPF_ARRAY(port_allow, u8, 65536);  // index = port (host order)
BPF_HASH(addr_allow, u32, u8, 64);
BPF_ARRAY(cfg, struct cfg_t, 1);
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
BPF_PERCPU_ARRAY(stats, u64, 2);  // STAT_LOST, STAT_PURGED
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void stat_inc(int idx) {
    u64 *v = stats.lookup(&idx);
    if (v)
        *v += 1;
}

// No wakeup per record: user space drains the ring on a short timer, so a busy
// connection rate costs one read per batch instead of one wakeup per event.
static __always_inline int emit(struct event_t *e) {
    if (events.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP) != 0)
        stat_inc(STAT_LOST);
    return 0;
}

static __always_inline u64 rd_ptr(const void *base, int off) {
    u64 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 rd_u32(const void *base, int off) {
    u32 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u16 rd_u16(const void *base, int off) {
    u16 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

// struct net * -> ns.inum
static __always_inline u32 net_inum(u64 net) {
    return net ? rd_u32((void *)net, OFF_NET_INUM) : 0;
}

static __always_inline u32 dev_netns(u64 dev) {
    return dev ? net_inum(rd_ptr((void *)dev, OFF_DEV_ND_NET)) : 0;
}

static __always_inline u32 sk_netns(u64 sk) {
    return sk ? net_inum(rd_ptr((void *)sk, OFF_SK_NET)) : 0;
}

static __always_inline int netns_allowed(u32 inum) {
    return inum && netns_allow.lookup(&inum) != NULL;
}

static __always_inline void fill_dev(struct event_t *e, u64 dev) {
    e->ifindex = rd_u32((void *)dev, OFF_DEV_IFINDEX);
    bpf_probe_read_kernel(&e->ifname, sizeof(e->ifname), (char *)dev + OFF_DEV_NAME);
}

// Resolve the netns of an skb: its device, else its route's device (OUTPUT-hook drops
// happen before ip_output sets skb->dev), else its socket.
static __always_inline u32 skb_netns(struct event_t *e, const void *skb) {
    u64 dev = rd_ptr(skb, OFF_SKB_DEV);
    if (dev) {
        e->dev_from = 1;
        fill_dev(e, dev);
        return dev_netns(dev);
    }
    u64 dst = rd_ptr(skb, OFF_SKB_REFDST) & ~1ULL;
    if (dst) {
        dev = rd_ptr((void *)dst, OFF_DST_DEV);
        if (dev) {
            e->dev_from = 2;
            fill_dev(e, dev);
            return dev_netns(dev);
        }
    }
    u64 sk = rd_ptr(skb, OFF_SKB_SK);
    if (sk) {
        e->dev_from = 3;
        return sk_netns(sk);
    }
    return 0;
}

// Scope filter on a tuple (the netns is checked before). Ports sit in a 64K-entry
// array (a lookup is one inlined index), addresses in a small hash.
static __always_inline int filter_ports_addrs(u8 has_tuple, u16 sport, u16 dport,
                                              u32 saddr, u32 daddr) {
    int z = 0;
    struct cfg_t *c = cfg.lookup(&z);
    if (!c)
        return 1;
    if (c->use_port) {
        if (!has_tuple)
            return 0;
        int sp = sport, dp = dport;
        u8 *a = port_allow.lookup(&sp), *b = port_allow.lookup(&dp);
        if (!(a && *a) && !(b && *b))
            return 0;
    }
    if (c->use_addr) {
        if (!has_tuple)
            return 0;
        if (!addr_allow.lookup(&saddr) && !addr_allow.lookup(&daddr))
            return 0;
    }
    return 1;
}

static __always_inline int filter_tuple(struct event_t *e) {
    return filter_ports_addrs(e->has_tuple, e->sport, e->dport, e->saddr, e->daddr);
}

static __always_inline struct event_t *new_event(u32 kind) {
    int z = 0;
    struct event_t *e = scratch.lookup(&z);
    if (!e)
        return NULL;
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns();
    e->kind = kind;
    return e;
}

// ---- packet hooks: the hot path (every packet on every lab interface) ----------
//
// Cost matters here, so: one bpf_probe_read_kernel of the sk_buff span that holds
// every member these hooks use (SKB_BLK_START..SKB_BLK_END, computed from BTF by
// offsets.py) instead of one read per member; one read of the IPv4 header plus the 20
// bytes after it; the decision (scope, flags) before the event is built; the device
// name and index read only for an event that is sent.

#define SKB_HOT_WORDS ((SKB_HOT_END - SKB_HOT_START + 7) / 8)
#define SKB_BLK_WORDS ((SKB_BLK_END - SKB_BLK_START + 7) / 8)
struct skb_hot {  // head, network_header, protocol: read for every packet
    u64 w[SKB_HOT_WORDS];
};
struct skb_view {  // dev, sk, _skb_refdst, len, mark: read for a packet that is sent
    u64 w[SKB_BLK_WORDS];
};
#define SKB_HOT(v, T, OFF) (*(T *)((char *)(v)->w + ((OFF) - SKB_HOT_START)))
#define SKB_AT(v, T, OFF) (*(T *)((char *)(v)->w + ((OFF) - SKB_BLK_START)))

struct pkt_t {
    u32 saddr;
    u32 daddr;
    u32 seq;
    u32 ack;
    u16 sport;
    u16 dport;
    u16 l3proto;
    u16 ip_id;
    u8 proto;
    u8 flags;
    u8 has_tuple;
};

// net_device members ifindex, nd_net and name, read in one go when offsets.py found them
// close together (DEV_BLK_START/END defined), else one read each.
#ifdef DEV_BLK_START
struct dev_view {
    u64 w[(DEV_BLK_END - DEV_BLK_START + 7) / 8];
};
#define DEV_AT(v, OFF) ((char *)(v)->w + ((OFF) - DEV_BLK_START))
#else
struct dev_view {
    u64 dev;
};
#endif

static __always_inline u32 dev_view_netns(struct dev_view *d, u64 dev) {
#ifdef DEV_BLK_START
    if (bpf_probe_read_kernel(d, sizeof(*d), (char *)dev + DEV_BLK_START))
        return 0;
    return net_inum(*(u64 *)DEV_AT(d, OFF_DEV_ND_NET));
#else
    d->dev = dev;
    return dev_netns(dev);
#endif
}

static __always_inline void dev_view_fill(struct event_t *e, struct dev_view *d) {
#ifdef DEV_BLK_START
    e->ifindex = *(u32 *)DEV_AT(d, OFF_DEV_IFINDEX);
    __builtin_memcpy(&e->ifname, DEV_AT(d, OFF_DEV_NAME), sizeof(e->ifname));
#else
    fill_dev(e, d->dev);
#endif
}

// netns of the skb: its device, else its route's device (OUTPUT-hook drops happen
// before ip_output sets skb->dev), else its socket. *from: 1 skb->dev, 2 dst->dev,
// 3 socket (then d is not filled).
static __always_inline u32 view_netns(struct skb_view *v, struct dev_view *d, u8 *from) {
    u64 dev = SKB_AT(v, u64, OFF_SKB_DEV);
    if (dev) {
        *from = 1;
    } else {
        u64 dst = SKB_AT(v, u64, OFF_SKB_REFDST) & ~1ULL;
        if (dst)
            dev = rd_ptr((void *)dst, OFF_DST_DEV);
        if (dev) {
            *from = 2;
        } else {
            u64 sk = SKB_AT(v, u64, OFF_SKB_SK);
            if (!sk)
                return 0;
            *from = 3;
            return sk_netns(sk);
        }
    }
    return dev_view_netns(d, dev);
}

// IPv4 + TCP/UDP from head + network_header. The transport offset comes from the IP
// header length: on receive, transport_header is not yet set when netif_receive_skb
// fires.
static __always_inline void parse_pkt(struct pkt_t *p, struct skb_hot *v) {
    u16 l3 = SKB_HOT(v, u16, OFF_SKB_PROTOCOL);
    p->l3proto = ntohs(l3);
    if (l3 != htons(0x0800))
        return;
    u64 head = SKB_HOT(v, u64, OFF_SKB_HEAD);
    u16 nh = SKB_HOT(v, u16, OFF_SKB_NETWORK_HEADER);
    if (!head || nh == NO_HEADER)
        return;
    u8 h[40];  // filled by the read (zeroed by the helper on failure)
    if (bpf_probe_read_kernel(h, sizeof(h), (void *)(head + nh)))
        return;
    if ((h[0] >> 4) != 4)
        return;
    u32 ihl = (h[0] & 0x0f) * 4;
    p->proto = h[9];
    p->ip_id = (h[4] << 8) | h[5];
    __builtin_memcpy(&p->saddr, &h[12], 4);
    __builtin_memcpy(&p->daddr, &h[16], 4);
    p->has_tuple = 1;
    if (ihl != 20 && bpf_probe_read_kernel(&h[20], 20, (void *)(head + nh + ihl)))
        return;
    if (p->proto == PROTO_TCP) {
        p->sport = (h[20] << 8) | h[21];
        p->dport = (h[22] << 8) | h[23];
        p->seq = ((u32)h[24] << 24) | ((u32)h[25] << 16) | ((u32)h[26] << 8) | h[27];
        p->ack = ((u32)h[28] << 24) | ((u32)h[29] << 16) | ((u32)h[30] << 8) | h[31];
        p->flags = h[33];
    } else if (p->proto == PROTO_UDP) {
        p->sport = (h[20] << 8) | h[21];
        p->dport = (h[22] << 8) | h[23];
    }
}


// A zeroed event reserved in the ring (hot paths write it in place, unlike new_event's
// scratch copy), with the fields every kind has; NULL (counted as lost)
// when the ring is full.
static __always_inline struct event_t *reserve_event(u32 kind, u32 inum, u8 from) {
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e) {
        stat_inc(STAT_LOST);
        return NULL;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns();
    e->kind = kind;
    e->netns = inum;
    e->dev_from = from;
    return e;
}

static __always_inline int on_skb(const void *skb, u32 kind, u32 reason, u64 location) {
    struct skb_hot hv;
    if (bpf_probe_read_kernel(&hv, sizeof(hv), (const char *)skb + SKB_HOT_START))
        return 0;
    struct pkt_t p = {};
    parse_pkt(&p, &hv);
    int z = 0;
    struct cfg_t *c = cfg.lookup(&z);
    if (!c)
        return 0;
    // Decide on the segment before the (dearer) netns lookup: most packets are pure
    // ACKs and data, and they are the ones not sent. Counted only per CPU in total.
    if (kind != K_DROP && p.proto == PROTO_TCP && !(p.flags & TCP_SYN_RST) &&
        !c->all_segments &&
        !((p.flags & TCP_FIN) && kind == K_TX && rd_ptr(skb, OFF_SKB_SK)))
        return 0;  // pure ACK / data / a FIN being forwarded
    if (!filter_ports_addrs(p.has_tuple, p.sport, p.dport, p.saddr, p.daddr))
        return 0;
    struct skb_view v;
    if (bpf_probe_read_kernel(&v, sizeof(v), (const char *)skb + SKB_BLK_START))
        return 0;
    struct dev_view d;
    u8 from = 0;
    u32 inum = view_netns(&v, &d, &from);
    if (!netns_allowed(inum))
        return 0;
    if (kind == K_DROP && c->purge_reason && reason == c->purge_reason && from != 1) {
        stat_inc(STAT_PURGED);
        return 0;
    }
    struct event_t *e = reserve_event(kind, inum, from);
    if (!e)
        return 0;
    if (from == 1 || from == 2)
        dev_view_fill(e, &d);
    e->reason = reason;
    e->location = location;
    e->skbaddr = (u64)skb;
    e->mark = SKB_AT(&v, u32, OFF_SKB_MARK);
    e->len = SKB_AT(&v, u32, OFF_SKB_LEN);
    e->saddr = p.saddr;
    e->daddr = p.daddr;
    e->seq = p.seq;
    e->ack = p.ack;
    e->sport = p.sport;
    e->dport = p.dport;
    e->l3proto = p.l3proto;
    e->ip_id = p.ip_id;
    e->proto = p.proto;
    e->tcp_flags = p.flags;
    e->has_tuple = p.has_tuple;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

// net:netif_receive_skb and net:net_dev_queue attached raw: the program gets the
// skb pointer directly, and the kernel skips building the tracepoint's record
// (device name string etc.) for every packet. TP_PROTO(struct sk_buff *skb) for both.
RAW_TRACEPOINT_PROBE(netif_receive_skb) {
    return on_skb((const void *)ctx->args[0], K_RX, 0, 0);
}

RAW_TRACEPOINT_PROBE(net_dev_queue) {
    return on_skb((const void *)ctx->args[0], K_TX, 0, 0);
}

// kfree_skb keeps its classic form: `reason` and `location` come as named fields of
// the record (argument order of the raw prototype has changed across kernels).
TRACEPOINT_PROBE(skb, kfree_skb) {
    return on_skb(args->skbaddr, K_DROP, (u32)args->reason, (u64)args->location);
}

// Socket tracepoints carry the tuple as fields; the netns comes from the socket.
static __always_inline int on_sock(void *ctx, u64 sk, u32 kind, u16 family, u16 sport,
                                   u16 dport, const u8 *saddr, const u8 *daddr) {
    if (family != AF_INET_)
        return 0;
    struct event_t *e = new_event(kind);
    if (!e)
        return 0;
    u32 inum = sk_netns(sk);
    if (!netns_allowed(inum))
        return 0;
    e->netns = inum;
    e->dev_from = 3;
    e->proto = PROTO_TCP;
    e->sport = sport;
    e->dport = dport;
    __builtin_memcpy(&e->saddr, saddr, 4);
    __builtin_memcpy(&e->daddr, daddr, 4);
    e->has_tuple = 1;
    if (!filter_tuple(e))
        return 0;
    return emit(e);
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_synack) {
    return on_sock(args, (u64)args->skaddr, K_RETRANS_SYNACK, args->family, args->sport,
                   args->dport, args->saddr, args->daddr);
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset) {
    return on_sock(args, (u64)args->skaddr, K_RECV_RESET, args->family, args->sport,
                   args->dport, args->saddr, args->daddr);
}

// Ten of these per connection: decide from the record's fields first, then write the
// event straight into the ring (no scratch copy).
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != PROTO_TCP || args->family != AF_INET_)
        return 0;
    u32 saddr, daddr;
    __builtin_memcpy(&saddr, args->saddr, 4);
    __builtin_memcpy(&daddr, args->daddr, 4);
    if (!filter_ports_addrs(1, args->sport, args->dport, saddr, daddr))
        return 0;
    u32 inum = sk_netns((u64)args->skaddr);
    if (!netns_allowed(inum))
        return 0;
    struct event_t *e = reserve_event(K_SOCK_STATE, inum, 3);
    if (!e)
        return 0;
    e->proto = PROTO_TCP;
    e->sport = args->sport;
    e->dport = args->dport;
    e->saddr = saddr;
    e->daddr = daddr;
    e->has_tuple = 1;
    e->oldstate = args->oldstate;
    e->newstate = args->newstate;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

// tcp_send_reset: skaddr is NULL when no socket matched (RST to a closed port); then
// the netns comes from the triggering skb. Addresses are sockaddr_in in 28 bytes.
TRACEPOINT_PROBE(tcp, tcp_send_reset) {
    struct event_t *e = new_event(K_SEND_RESET);
    if (!e)
        return 0;
    u64 sk = (u64)args->skaddr;
    u32 inum = 0;
    if (sk) {
        e->dev_from = 3;
        inum = sk_netns(sk);
    } else if (args->skbaddr) {
        inum = skb_netns(e, args->skbaddr);
    }
    if (!netns_allowed(inum))
        return 0;
    u8 sa[8] = {}, da[8] = {};
    __builtin_memcpy(sa, args->saddr, 8);
    __builtin_memcpy(da, args->daddr, 8);
    if ((sa[0] | (sa[1] << 8)) != AF_INET_)
        return 0;
    e->netns = inum;
    e->skbaddr = (u64)args->skbaddr;
    e->proto = PROTO_TCP;
    e->sport = (sa[2] << 8) | sa[3];
    e->dport = (da[2] << 8) | da[3];
    __builtin_memcpy(&e->saddr, &sa[4], 4);
    __builtin_memcpy(&e->daddr, &da[4], 4);
    e->has_tuple = 1;
    e->oldstate = args->state;
    e->tcp_flags = 0x04;  // the segment sent is an RST
    if (!filter_tuple(e))
        return 0;
    return emit(e);
}
