// netlab packet tracer: tracepoints only (this kernel has no kprobes).
//
// Struct member offsets are NOT taken from the kernel headers: the headers on the
// machine (Debian 6.1) do not match the running kernel (6.18), so sk_buff & co.
// have a different layout. bpf.py reads the offsets from /sys/kernel/btf/vmlinux
// at run time and passes them as -D macros (OFF_*). Every kernel read is an explicit
// bpf_probe_read_kernel at base + OFF_x, never a C member access, so the bcc
// rewriter cannot smuggle in a header-derived offset.
//
// Filtering happens here: an event leaves the kernel only when its netns inode is in
// `netns_allow` and (when configured) a port / IPv4 address matches. Host traffic
// never reaches user space.

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
    u16 pad0;
    u32 pad1;
};

struct cfg_t {
    u32 use_port;
    u32 use_addr;
};

BPF_HASH(netns_allow, u32, u8, 1024);
BPF_HASH(port_allow, u16, u8, 64);
BPF_HASH(addr_allow, u32, u8, 64);
BPF_ARRAY(cfg, struct cfg_t, 1);
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
BPF_PERF_OUTPUT(events);

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

// Parse IPv4 + TCP/UDP from skb->head + network_header. The transport offset is
// computed from the IP header length: on receive, transport_header is not yet set
// (it equals the network header) when netif_receive_skb fires.
static __always_inline void parse_skb(struct event_t *e, const void *skb) {
    u16 l3proto = rd_u16(skb, OFF_SKB_PROTOCOL);
    e->l3proto = ntohs(l3proto);
    if (l3proto != htons(0x0800))
        return;
    u64 head = rd_ptr(skb, OFF_SKB_HEAD);
    u16 nh = rd_u16(skb, OFF_SKB_NETWORK_HEADER);
    if (!head || nh == NO_HEADER)
        return;
    u8 iph[20] = {};
    if (bpf_probe_read_kernel(iph, sizeof(iph), (void *)(head + nh)))
        return;
    if ((iph[0] >> 4) != 4)
        return;
    u32 ihl = (iph[0] & 0x0f) * 4;
    e->proto = iph[9];
    __builtin_memcpy(&e->saddr, &iph[12], 4);
    __builtin_memcpy(&e->daddr, &iph[16], 4);
    e->has_tuple = 1;
    void *l4 = (void *)(head + nh + ihl);
    if (e->proto == PROTO_TCP) {
        u8 th[20] = {};
        if (bpf_probe_read_kernel(th, sizeof(th), l4))
            return;
        e->sport = (th[0] << 8) | th[1];
        e->dport = (th[2] << 8) | th[3];
        e->seq = ((u32)th[4] << 24) | ((u32)th[5] << 16) | ((u32)th[6] << 8) | th[7];
        e->ack = ((u32)th[8] << 24) | ((u32)th[9] << 16) | ((u32)th[10] << 8) | th[11];
        e->tcp_flags = th[13];
    } else if (e->proto == PROTO_UDP) {
        u8 uh[4] = {};
        if (bpf_probe_read_kernel(uh, sizeof(uh), l4))
            return;
        e->sport = (uh[0] << 8) | uh[1];
        e->dport = (uh[2] << 8) | uh[3];
    }
}

static __always_inline int filter_tuple(struct event_t *e) {
    int z = 0;
    struct cfg_t *c = cfg.lookup(&z);
    if (!c)
        return 1;
    if (c->use_port) {
        if (!e->has_tuple)
            return 0;
        u16 sp = e->sport, dp = e->dport;
        if (!port_allow.lookup(&sp) && !port_allow.lookup(&dp))
            return 0;
    }
    if (c->use_addr) {
        if (!e->has_tuple)
            return 0;
        u32 sa = e->saddr, da = e->daddr;
        if (!addr_allow.lookup(&sa) && !addr_allow.lookup(&da))
            return 0;
    }
    return 1;
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

static __always_inline int on_skb(void *ctx, const void *skb, u32 kind, u32 reason,
                                  u64 location) {
    struct event_t *e = new_event(kind);
    if (!e)
        return 0;
    u32 inum = skb_netns(e, skb);
    if (!netns_allowed(inum))
        return 0;
    e->netns = inum;
    e->reason = reason;
    e->location = location;
    e->skbaddr = (u64)skb;
    e->mark = rd_u32(skb, OFF_SKB_MARK);
    e->len = rd_u32(skb, OFF_SKB_LEN);
    parse_skb(e, skb);
    if (!filter_tuple(e))
        return 0;
    events.perf_submit(ctx, e, sizeof(*e));
    return 0;
}

TRACEPOINT_PROBE(net, netif_receive_skb) {
    return on_skb(args, args->skbaddr, K_RX, 0, 0);
}

TRACEPOINT_PROBE(net, net_dev_queue) {
    return on_skb(args, args->skbaddr, K_TX, 0, 0);
}

TRACEPOINT_PROBE(skb, kfree_skb) {
    return on_skb(args, args->skbaddr, K_DROP, (u32)args->reason, (u64)args->location);
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
    events.perf_submit(ctx, e, sizeof(*e));
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_synack) {
    return on_sock(args, (u64)args->skaddr, K_RETRANS_SYNACK, args->family, args->sport,
                   args->dport, args->saddr, args->daddr);
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset) {
    return on_sock(args, (u64)args->skaddr, K_RECV_RESET, args->family, args->sport,
                   args->dport, args->saddr, args->daddr);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != PROTO_TCP)
        return 0;
    struct event_t *e = new_event(K_SOCK_STATE);
    if (!e || args->family != AF_INET_)
        return 0;
    u32 inum = sk_netns((u64)args->skaddr);
    if (!netns_allowed(inum))
        return 0;
    e->netns = inum;
    e->dev_from = 3;
    e->proto = PROTO_TCP;
    e->sport = args->sport;
    e->dport = args->dport;
    __builtin_memcpy(&e->saddr, args->saddr, 4);
    __builtin_memcpy(&e->daddr, args->daddr, 4);
    e->has_tuple = 1;
    e->oldstate = args->oldstate;
    e->newstate = args->newstate;
    if (!filter_tuple(e))
        return 0;
    events.perf_submit(args, e, sizeof(*e));
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
    events.perf_submit(args, e, sizeof(*e));
    return 0;
}
