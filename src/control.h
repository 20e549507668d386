/* control.h — the control socket between xpimportd and xpimportctl.
 *
 * A unix stream socket (default RUNTIME/control.sock, mode 0660) in the
 * runtime directory. One request per connection: the client writes one JSON
 * object on one line ("\n"-terminated, at most CONTROL_MAX_REQUEST bytes),
 * optionally with one file descriptor attached (SCM_RIGHTS; xpimportctl
 * import passes the file it opened), and reads one JSON object on one line;
 * then both sides close. Every request has "cmd"; every response has "ok"
 * (true/false) and, when false, "error" (one line for the operator) and
 * optionally "code" ("not_found", "paused", "busy", "refused", "invalid").
 * The commands and their shapes are listed in xpimportctl(1) (PROTOCOL).
 *
 * Peers are checked with SO_PEERCRED: root, the daemon's own uid and members
 * of the socket's group are served; anyone else gets
 * {"ok":false,"code":"refused","error":...} and the handler never sees them.
 *
 * Server side: on the daemon's libuv loop (uv_poll_t on the sockets, never
 * blocking). Client side: blocking, with a timeout (xpimportctl). */
#ifndef XP_CONTROL_H
#define XP_CONTROL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#define CONTROL_SOCKET_NAME "control.sock"
#define CONTROL_DEFAULT_RUNTIME_DIR "/run/xpimportd"
#define CONTROL_MAX_REQUEST (64 * 1024)         /* bytes of one request line */
#define CONTROL_MAX_RESPONSE (16 * 1024 * 1024) /* bytes of one response line */
#define CONTROL_MAX_CONNECTIONS 64              /* more are refused (closed) */
#define CONTROL_READ_TIMEOUT_MS 10000           /* a request must arrive within */

/* The socket path for runtime_dir (NULL or "": $RUNTIME_DIRECTORY, its
 * first entry if it lists several, else CONTROL_DEFAULT_RUNTIME_DIR).
 * 0 or -ENAMETOOLONG (a unix socket path is at most 107 bytes). */
int control_socket_path(const char *runtime_dir, char *out, size_t len);

/* ---- server (xpimportd) ------------------------------------------------- */

struct control_server;
struct control_reply;

/* Called on the loop thread for each well-formed request (a JSON object
 * with a string "cmd"). request is borrowed for the duration of the call
 * (json_incref it to keep it). The handler must call control_reply_send()
 * exactly once for reply, now or later (e.g. when a run finished). */
typedef void (*control_handler_fn)(void *ud, const json_t *request, struct control_reply *reply);

/* Bind socket_path (a stale socket there is replaced: call it only while
 * holding the state lock), mode 0660, and serve it on loop. The parent
 * directory is created (0755) if missing. 0 or negative errno (-EADDRINUSE
 * if something else than a socket is at socket_path). */
int control_server_start(uv_loop_t *loop, const char *socket_path, control_handler_fn handler,
                         void *ud, struct control_server **out);
/* Stop listening, remove the socket file, close every connection. Replies
 * still pending stay valid: control_reply_send() then just frees them. The
 * struct is freed once its handles are closed (after a uv_run turn).
 * NULL is a no-op. */
void control_server_close(struct control_server *s);

/* Send response (the reference is taken, as json_object_set_new; NULL sends
 * {"ok":false,"error":"internal error"}) and free reply. 0, or -EPIPE if
 * the client is gone (the response is dropped; reply is freed either way). */
int control_reply_send(struct control_reply *reply, json_t *response);
/* Convenience: {"ok":false,"code":code (omitted if NULL),"error":message}. */
int control_reply_error(struct control_reply *reply, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The file descriptor the client attached, now owned by the caller; -1 if
 * none (or already taken). An untaken fd is closed with the reply. */
int control_reply_take_fd(struct control_reply *reply);
/* Who asked (SO_PEERCRED), for logs. */
uid_t control_reply_peer_uid(const struct control_reply *reply);
pid_t control_reply_peer_pid(const struct control_reply *reply);

/* Pure helper for the peer check: allowed if uid is 0 or self_uid, gid is
 * sock_gid, or sock_gid is among groups. */
bool control_peer_allowed(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups,
                          uid_t self_uid, gid_t sock_gid);

/* ---- client (xpimportctl) ----------------------------------------------- */

/* Send req (one line) and wait up to timeout_ms (< 0: no limit) for the
 * response object (*resp, a new reference). Returns 0 whatever "ok" says;
 * negative errno with err filled on transport problems:
 *   -ENOENT       no socket at the path (the daemon is not running)
 *   -ECONNREFUSED a socket file but nobody listening (daemon gone)
 *   -EACCES       no permission to use the socket
 *   -ETIMEDOUT    no answer in time
 *   -ECONNRESET   the daemon closed the connection without answering
 *   -EBADMSG      the answer is not a JSON object, or too long */
int control_request(const char *socket_path, const json_t *req, int timeout_ms, json_t **resp,
                    char *err, size_t errlen);
/* The same, passing send_fd (>= 0) along with the request (SCM_RIGHTS). */
int control_request_fd(const char *socket_path, const json_t *req, int send_fd, int timeout_ms,
                       json_t **resp, char *err, size_t errlen);

/* ---- job-state edits made on the operator's behalf ---------------------- */
/* Used by xpimportctl when the daemon is not running and by the daemon's
 * "resume"/"forget" commands when it is, so that both write the same. */

#define CONTROL_HISTORY_MAX 200 /* entries kept in a job state's "history" */

/* Append {"action","who","when" (ISO-8601 UTC),"file" (if not NULL)} to
 * job_state's "history" array (created if absent), keeping the newest
 * CONTROL_HISTORY_MAX. 0 or -ENOMEM / -EINVAL (not an object). */
int control_job_history_add(json_t *job_state, const char *action, const char *who,
                            const char *file, int64_t now_ms);
/* Remove "paused" and record {"action":"resume",...}. Returns 1 if the job
 * was paused, 0 if it was not (nothing recorded), negative errno. */
int control_job_resume(json_t *job_state, const char *who, int64_t now_ms);
#endif
