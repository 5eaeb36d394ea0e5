/* seccomp-probe: makes a few syscalls a seccomp profile decides on and prints
 * one line per call, "name=ok" or "name=<errno name>", for the e2e suite
 * security_seccomp. Built static at test time (cc -static) and put into the
 * test image, since busybox has no applet for most of these calls. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static void report(const char *name, long rc) {
	if (rc >= 0)
		printf("%s=ok\n", name);
	else
		printf("%s=%s\n", name, strerrorname_np(errno));
}

/* clone(2) with these flags; the child exits at once. */
static long try_clone(unsigned long flags) {
	long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	return pid;
}

/* unshare(2) in a child, so the probe itself stays in its namespaces. */
static long try_unshare(int flags) {
	pid_t pid = fork();
	if (pid == 0)
		_exit(syscall(SYS_unshare, flags) < 0 ? errno : 0);
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	errno = WEXITSTATUS(status);
	return errno ? -1 : 0;
}

int main(void) {
	/* keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): not in the
	 * default allow list. */
	report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
	/* unshare/clone with a namespace flag: CAP_SYS_ADMIN only. */
	report("unshare_user", try_unshare(CLONE_NEWUSER));
	report("clone_newuser", try_clone(CLONE_NEWUSER));
	/* clone without namespace flags: allowed (fork). */
	report("clone_plain", try_clone(0));
	/* clone3 with no arguments: EINVAL from the kernel, ENOSYS from the
	 * default profile without CAP_SYS_ADMIN. */
	report("clone3", syscall(SYS_clone3, NULL, 0));
	/* personality: query allowed, PER_BSD (6) not. */
	long orig = syscall(SYS_personality, 0xffffffffUL);
	report("personality_query", orig);
	report("personality_bsd", syscall(SYS_personality, 6UL));
	if (orig >= 0)
		syscall(SYS_personality, (unsigned long)orig);
	/* socket: AF_UNIX allowed, AF_VSOCK refused by the default profile. */
	report("socket_unix", syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0));
	report("socket_vsock", syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
	/* mkdir: allowed by the default profile. */
	long rc = syscall(SYS_mkdir, "/tmp/probe-dir", 0755);
	report("mkdir", rc < 0 && errno == EEXIST ? 0 : rc);
	return 0;
}
