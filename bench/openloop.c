/*
 * openloop: the bench's open-loop HTTP/1.1 load generator (libc only; built by bench/openloop.py).
 *
 * Request i is due at start + i / rate, whatever the server does. When it is due it goes out
 * on an idle kept-alive connection of a fixed pool (--conns, all opened before the clock
 * starts): by default the one idle the longest (--reuse oldest), so that every connection
 * carries an even share of the rate, as from many clients each sending now and then (wrk2
 * gives each connection rate/conns). --reuse newest takes the most recently idle one instead,
 * as one client's pool does: a handful of connections then carries nearly all the load, and
 * the server worker the kernel hashed them to (SO_REUSEPORT) runs near saturation while the
 * other idles, a tail of the generator's making. When none is idle the request waits in a
 * queue and is counted as "held". The pool never
 * grows: opening connections while the server is slow would add to its work (accepts) just
 * when it can least afford it, a spiral the first version showed. Its latency runs from the moment
 * it was due to the last byte of its answer, so waiting (for a connection, for a slow server)
 * counts: no coordinated omission. One thread, epoll, non-blocking sockets, a timerfd armed
 * at the next due time (no sleep granularity beyond the kernel's timer slack).
 *
 * Bodies: one form body per line of --bodies; this process takes lines offset, offset+step,
 * ... and wraps. Answers must be framed by Content-Length (aiohttp always sends it).
 *
 * Output: each latency (microseconds, uint32 little-endian) to --latencies; one line
 * `BENCH-JSON {...}` on stdout with the counts. `--schedule N` prints the first N due
 * offsets in nanoseconds and exits (the schedule, testable without a server).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
#define MAX_HEADERS 16

typedef struct {
    int fd;
    int state; /* 0 closed, 1 connecting, 2 idle, 3 busy: change it with set_state() */
    int in_idle; /* in the idle ring (perhaps no longer idle: checked when taken) */
    int64_t due; /* of the request in flight */
    char *out; /* request being written */
    size_t out_len, out_off;
    char in[BUF];
    size_t in_len;
} conn_t;

static struct {
    const char *host, *path, *bodies_path, *latencies_path;
    int port;
    const char *headers[MAX_HEADERS];
    int nheaders;
    double rate, duration, timeout;
    int conns, offset, step;
} opt = {"127.0.0.1", "/", NULL, NULL, 0, {0}, 0, 0, 0, 5.0, 16, 0, 1};

static char **bodies;
static size_t *body_lens;
static size_t nbodies, next_body;
static char *head; /* request line and headers up to Content-Length */
static size_t head_len;
static conn_t *pool;
static int npool, epfd;
static int counts[4]; /* connections per state (closed ones not counted) */
/* Idle connections, in the order they became idle: a ring of --conns slots (a connection is in
 * it at most once), taken from the head (oldest) or the tail (newest, --reuse newest). */
static conn_t **idle;
static int idle_head, nidle, newest_first;
static struct sockaddr_in addr;
static FILE *lat_out;
/* The queue of due requests waiting for a connection: their due times, in order. */
static int64_t *queue;
static size_t qhead, qtail, qcap, held_mark;
static uint64_t ok, sent, held, err_connect, err_io, err_timeout, late_1ms;
static uint64_t status_count[600];
static int64_t max_lag;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Due time of request i, relative to the start: exact, no drift however long the run. */
static int64_t due_offset(uint64_t i, double rate) {
    return (int64_t)((long double)i * 1e9L / (long double)rate);
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void load_bodies(void) {
    FILE *f = fopen(opt.bodies_path, "rb");
    if (!f) die(opt.bodies_path);
    char *line = NULL;
    size_t cap = 0, n = 0, idx = 0, alloc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (idx++ % (size_t)opt.step != (size_t)opt.offset) continue;
        if (n == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            bodies = realloc(bodies, alloc * sizeof *bodies);
            body_lens = realloc(body_lens, alloc * sizeof *body_lens);
            if (!bodies || !body_lens) die("realloc");
        }
        char *head_buf = malloc(head_len + 64 + (size_t)len);
        if (!head_buf) die("malloc");
        int h = sprintf(head_buf, "%sContent-Length: %zd\r\n\r\n", head, len);
        memcpy(head_buf + h, line, (size_t)len);
        bodies[n] = head_buf;
        body_lens[n++] = (size_t)h + (size_t)len;
    }
    free(line);
    fclose(f);
    nbodies = n;
    if (!nbodies) {
        fprintf(stderr, "openloop: no bodies for this process in %s\n", opt.bodies_path);
        exit(2);
    }
}

static void build_head(void) {
    size_t cap = 512 + strlen(opt.path) + strlen(opt.host);
    for (int i = 0; i < opt.nheaders; i++) cap += strlen(opt.headers[i]) + 2;
    head = malloc(cap);
    if (!head) die("malloc");
    int n = sprintf(head, "POST %s HTTP/1.1\r\nHost: %s:%d\r\n", opt.path, opt.host, opt.port);
    for (int i = 0; i < opt.nheaders; i++) n += sprintf(head + n, "%s\r\n", opt.headers[i]);
    n += sprintf(head + n, "Content-Type: application/x-www-form-urlencoded\r\n");
    head_len = (size_t)n;
}

static void watch(conn_t *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void set_state(conn_t *c, int state) {
    if (c->state) counts[c->state]--;
    if (state) counts[state]++;
    c->state = state;
    if (state == 2 && !c->in_idle) {
        c->in_idle = 1;
        idle[(idle_head + nidle++) % opt.conns] = c;
    }
}

/* The connection idle the longest (or the most recently idle, --reuse newest), or NULL. */
static conn_t *pop_idle(void) {
    while (nidle) {
        conn_t *c;
        if (newest_first) {
            c = idle[(idle_head + --nidle) % opt.conns];
        } else {
            c = idle[idle_head];
            idle_head = (idle_head + 1) % opt.conns;
            nidle--;
        }
        c->in_idle = 0;
        if (c->state == 2) return c;
    }
    return NULL;
}

static void open_conn(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->in_len = 0;
    c->out = NULL;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        set_state(c, 2);
        watch(c, EPOLLIN, EPOLL_CTL_ADD);
    } else if (errno == EINPROGRESS) {
        set_state(c, 1);
        watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    } else {
        err_connect++;
        close(c->fd);
        c->fd = -1;
        set_state(c, 0);
    }
}

static void close_conn(conn_t *c) {
    if (c->fd >= 0) close(c->fd); /* close also removes it from the epoll set */
    c->fd = -1;
    set_state(c, 0);
}

/* A request failed (kind counted by the caller): reopen the connection for later ones. */
static void broken(conn_t *c) {
    close_conn(c);
    open_conn(c);
}

static void record(int64_t latency_ns) {
    uint32_t us = latency_ns / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(latency_ns / 1000);
    fwrite(&us, sizeof us, 1, lat_out);
}

static void flush_out(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN) {
                watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                return;
            }
            err_io++;
            broken(c);
            return;
        }
        c->out_off += (size_t)w;
    }
}

static void send_on(conn_t *c, int64_t due) {
    size_t b = next_body++ % nbodies;
    c->due = due;
    c->out = bodies[b];
    c->out_len = body_lens[b];
    c->out_off = 0;
    c->in_len = 0;
    set_state(c, 3);
    sent++;
    flush_out(c);
}

/* Parse one complete answer from c->in; 1 done, 0 need more, -1 unframeable. */
static int parse(conn_t *c, int *status, int *closing) {
    c->in[c->in_len] = 0;
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end) return c->in_len >= BUF - 1 ? -1 : 0;
    if (c->in_len < 12) return -1;
    *status = atoi(c->in + 9);
    long length = -1;
    *closing = 0;
    for (char *p = strstr(c->in, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
        if (!strncasecmp(p + 2, "content-length:", 15)) length = strtol(p + 17, NULL, 10);
        if (!strncasecmp(p + 2, "connection: close", 17)) *closing = 1;
    }
    if (length < 0) return -1;
    size_t total = (size_t)(end + 4 - c->in) + (size_t)length;
    if (total >= BUF) return -1;
    return c->in_len >= total ? 1 : 0;
}

static void on_readable(conn_t *c, int64_t *now) {
    for (;;) {
        ssize_t r = read(c->fd, c->in + c->in_len, BUF - 1 - c->in_len);
        if (r < 0 && errno == EAGAIN) return;
        if (r <= 0) {
            if (c->state == 3) err_io++;
            broken(c);
            return;
        }
        c->in_len += (size_t)r;
        if (c->state != 3) { /* bytes nobody asked for */
            err_io++;
            broken(c);
            return;
        }
        int status, closing;
        int done = parse(c, &status, &closing);
        if (done == 0) continue;
        if (done < 0) {
            err_io++;
            broken(c);
            return;
        }
        *now = now_ns();
        record(*now - c->due);
        if (status >= 200 && status < 300) ok++;
        else status_count[status > 0 && status < 600 ? status : 0]++;
        set_state(c, 2);
        c->in_len = 0;
        if (closing) broken(c);
        return;
    }
}

static void on_writable(conn_t *c) {
    if (c->state == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            err_connect++;
            close_conn(c);
            return;
        }
        set_state(c, 2);
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    if (c->state == 3) {
        flush_out(c);
        if (c->state == 3 && c->out_off == c->out_len) watch(c, EPOLLIN, EPOLL_CTL_MOD);
    }
}

static void push(int64_t due) {
    if (qtail - qhead == qcap) {
        size_t ncap = qcap ? qcap * 2 : 1024;
        int64_t *nq = malloc(ncap * sizeof *nq);
        if (!nq) die("malloc");
        for (size_t i = 0; i < qtail - qhead; i++) nq[i] = queue[(qhead + i) % qcap];
        qtail -= qhead;
        held_mark = held_mark > qhead ? held_mark - qhead : 0;
        qhead = 0;
        free(queue);
        queue = nq;
        qcap = ncap;
    }
    queue[qtail++ % qcap] = due;
}

/* Hand queued requests to idle connections; open more when none is idle. */
static void dispatch(void) {
    while (qhead < qtail) {
        conn_t *c = pop_idle();
        if (c) {
            send_on(c, queue[qhead++ % qcap]);
            continue;
        }
        /* None idle: reopen broken ones, and count each waiting request once as held. */
        if (counts[1] + counts[2] + counts[3] < npool) {
            for (int i = 0; i < npool; i++)
                if (pool[i].state == 0) open_conn(&pool[i]);
        }
        size_t from = qhead > held_mark ? qhead : held_mark;
        held += qtail - from;
        held_mark = qtail;
        return;
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: openloop --port P --bodies FILE --rate R --duration S --latencies FILE\n"
            "  [--host H] [--path /p] [-H 'Name: value']... [--conns N]\n"
            "  [--timeout S] [--offset I --step N] [--reuse oldest|newest]\n"
            "  | --schedule N --rate R\n");
    exit(2);
}

int main(int argc, char **argv) {
    long schedule = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--path")) opt.path = v;
        else if (!strcmp(a, "-H") && opt.nheaders < MAX_HEADERS) opt.headers[opt.nheaders++] = v;
        else if (!strcmp(a, "--bodies")) opt.bodies_path = v;
        else if (!strcmp(a, "--latencies")) opt.latencies_path = v;
        else if (!strcmp(a, "--rate")) opt.rate = atof(v);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--timeout")) opt.timeout = atof(v);
        else if (!strcmp(a, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(a, "--offset")) opt.offset = atoi(v);
        else if (!strcmp(a, "--step")) opt.step = atoi(v);
        else if (!strcmp(a, "--schedule")) schedule = atol(v);
        else if (!strcmp(a, "--reuse") && !strcmp(v, "newest")) newest_first = 1;
        else if (!strcmp(a, "--reuse") && !strcmp(v, "oldest")) newest_first = 0;
        else usage();
    }
    if (opt.rate <= 0) usage();
    if (schedule >= 0) {
        for (long i = 0; i < schedule; i++) printf("%lld\n", (long long)due_offset((uint64_t)i, opt.rate));
        return 0;
    }
    if (!opt.port || !opt.bodies_path || !opt.latencies_path || opt.duration <= 0) usage();
    if (opt.step < 1 || opt.offset < 0 || opt.offset >= opt.step) usage();
    if (opt.conns < 1) opt.conns = 1;
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) usage();
    build_head();
    load_bodies();
    lat_out = fopen(opt.latencies_path, "wb");
    if (!lat_out) die(opt.latencies_path);
    setvbuf(lat_out, NULL, _IOFBF, 1 << 16);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);
    pool = calloc((size_t)opt.conns, sizeof *pool);
    idle = calloc((size_t)opt.conns, sizeof *idle);
    if (!pool || !idle) die("calloc");
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake at the due time, not up to 50 us after it */
    for (npool = 0; npool < opt.conns; npool++) {
        pool[npool].fd = -1;
        open_conn(&pool[npool]);
    }
    /* Wait (bounded) for the initial pool to connect before the clock starts. */
    struct epoll_event events[256];
    int64_t ready_by = now_ns() + 10 * (int64_t)1000000000;
    for (;;) {
        if (!counts[1] || now_ns() > ready_by) break;
        int n = epoll_wait(epfd, events, 256, 100);
        for (int k = 0; k < n; k++)
            if (events[k].data.ptr) on_writable(events[k].data.ptr);
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t start = now_ns();
    int64_t stop_issuing = start + (int64_t)(opt.duration * 1e9);
    int64_t timeout_ns = (int64_t)(opt.timeout * 1e9);
    int64_t next_check = start;
    uint64_t i = 0;
    int64_t next_due = start;
    int issuing = 1;
    int64_t now = start;
    for (;;) {
        while (issuing && next_due <= now) {
            if (next_due >= stop_issuing) {
                issuing = 0;
                break;
            }
            int64_t lag = now - next_due; /* the generator's own delay: it woke late */
            if (lag > max_lag) max_lag = lag;
            if (lag > 1000000) late_1ms++;
            push(next_due);
            next_due = start + due_offset(++i, opt.rate);
        }
        dispatch();
        if (!issuing && !counts[3] && qhead == qtail) break;
        if (now >= next_check) { /* time out answers that never came */
            next_check = now + 10000000;
            for (int k = 0; k < npool; k++) {
                if (pool[k].state == 3 && now - pool[k].due > timeout_ns) {
                    err_timeout++;
                    broken(&pool[k]);
                }
            }
            while (qhead < qtail && now - queue[qhead % qcap] > timeout_ns) {
                err_timeout++;
                qhead++;
            }
        }
        if (issuing) {
            struct itimerspec its = {{0, 0}, {next_due / 1000000000, next_due % 1000000000}};
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(epfd, events, 256, issuing ? -1 : 10);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        now = now_ns();
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (!c) {
                uint64_t expirations;
                ssize_t r = read(tfd, &expirations, sizeof expirations);
                (void)r;
                continue;
            }
            if (c->fd < 0) continue;
            if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (c->state == 1) on_writable(c);
                else on_readable(c, &now);
            } else if (events[k].events & EPOLLOUT) {
                on_writable(c);
            }
        }
    }
    int64_t end = now_ns();
    getrusage(RUSAGE_SELF, &ru1);
    fclose(lat_out);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("BENCH-JSON {\"ok\":%llu,\"sent\":%llu,\"due\":%llu,\"connect\":%llu,\"io\":%llu,"
           "\"timeout\":%llu,\"duration_us\":%lld,\"cpu_us\":%lld,\"connections\":%d,"
           "\"held\":%llu,\"late_1ms\":%llu,\"max_lag_us\":%lld,\"status\":{",
           (unsigned long long)ok, (unsigned long long)sent, (unsigned long long)i,
           (unsigned long long)err_connect, (unsigned long long)err_io,
           (unsigned long long)err_timeout, (long long)((end - start) / 1000),
           (long long)(cpu * 1e6), npool, (unsigned long long)held,
           (unsigned long long)late_1ms, (long long)(max_lag / 1000));
    const char *sep = "";
    for (int s = 0; s < 600; s++) {
        if (status_count[s]) {
            printf("%s\"%d\":%llu", sep, s, (unsigned long long)status_count[s]);
            sep = ",";
        }
    }
    printf("}}\n");
    return 0;
}
