/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Kernel API differences for vhba.c.  This is the only file that looks at
 * the kernel version.  Every guard names the release that changed the API
 * and why it matters here; the helpers are named after what they do.
 *
 * Include after the kernel headers and before any driver code.  The
 * adaptors at the bottom forward to driver functions declared here and
 * defined in vhba.c.
 */
#ifndef VHBA_COMPAT_H
#define VHBA_COMPAT_H

#include <linux/version.h>

/*
 * True when building against @major.@minor.@sub or later.  This macro is
 * the module's only use of LINUX_VERSION_CODE.
 */
#define VHBA_KERNEL_SINCE(major, minor, sub) \
	(KERNEL_VERSION(major, minor, sub) <= LINUX_VERSION_CODE)

#if !VHBA_KERNEL_SINCE(3, 19, 0)
/* 3.19: READ_ONCE() arrived; before it, ACCESS_ONCE() did the same for scalars */
#define READ_ONCE(x) ACCESS_ONCE(x)
#endif

/* Hand a finished command back to the SCSI midlayer. */
static inline void vhba_cmd_done(struct scsi_cmnd *cmd)
{
#if VHBA_KERNEL_SINCE(5, 16, 0)
	/* 5.16: scsi_done() replaced the per-command ->scsi_done pointer */
	scsi_done(cmd);
#else
	cmd->scsi_done(cmd);
#endif
}

/*
 * Cap every scatterlist segment at @size bytes.  Not needed by the copy
 * path (it walks pages), kept so the block limits match upstream vhba.
 */
static inline void vhba_host_set_max_segment_size(struct Scsi_Host *shost,
						  unsigned int size)
{
#if VHBA_KERNEL_SINCE(5, 0, 0)
	/* 5.0: hosts may get segments over a page unless they set a cap */
	shost->max_segment_size = size;
#endif
}

/*
 * Read @len bytes of @file at *@pos into the kernel buffer @buf, advancing
 * *@pos.  Returns the bytes read or a negative errno.
 */
static inline ssize_t vhba_file_read(struct file *file, void *buf, size_t len,
				     loff_t *pos)
{
#if VHBA_KERNEL_SINCE(4, 14, 0)
	/* 4.14: kernel_read() takes the position by pointer, offset last */
	return kernel_read(file, buf, len, pos);
#else
	int n = kernel_read(file, *pos, buf, len);

	if (n > 0)
		*pos += n;
	return n;
#endif
}

/*
 * Whether kernel_read() can read @file.  5.10 removed set_fs(), so since
 * then kernel reads go through ->read_iter only; before, ->read did too.
 */
static inline bool vhba_file_kernel_readable(struct file *file)
{
	if (!(file->f_mode & FMODE_CAN_READ))
		return false;
#if VHBA_KERNEL_SINCE(5, 10, 0)
	return file->f_op->read_iter;
#else
	return true;
#endif
}

/*
 * Whether @sb is a stacked filesystem (overlayfs, ecryptfs), whose files
 * read from files of another filesystem.  3.18 added s_stack_depth with
 * overlayfs; before it, no such filesystem was stacked on a block device.
 */
static inline bool vhba_sb_stacked(struct super_block *sb)
{
#if VHBA_KERNEL_SINCE(3, 18, 0)
	return sb->s_stack_depth > 0;
#else
	return false;
#endif
}

/* A buffer of @size bytes, physically contiguous if that comes cheap. */
static inline void *vhba_kvmalloc(size_t size)
{
#if VHBA_KERNEL_SINCE(4, 12, 0)
	/* 4.12: kvmalloc() tries kmalloc() and falls back to vmalloc() */
	return kvmalloc(size, GFP_KERNEL);
#else
	void *p = kmalloc(size, GFP_KERNEL | __GFP_NOWARN | __GFP_NORETRY);

	return p ? p : vmalloc(size);
#endif
}

/* The lowest free number from 0 to @max in @ida, or a negative errno. */
static inline int vhba_ida_alloc(struct ida *ida, unsigned int max)
{
#if VHBA_KERNEL_SINCE(4, 19, 0)
	/* 4.19: ida_alloc_max() replaced ida_simple_get(), later removed */
	return ida_alloc_max(ida, max, GFP_KERNEL);
#else
	return ida_simple_get(ida, 0, max + 1, GFP_KERNEL);
#endif
}

static inline void vhba_ida_free(struct ida *ida, unsigned int id)
{
#if VHBA_KERNEL_SINCE(4, 19, 0)
	ida_free(ida, id);
#else
	ida_simple_remove(ida, id);
#endif
}

/*
 * Flag asking for a per-CPU workqueue.  6.17 added WQ_PERCPU so that
 * callers say so explicitly (unbound is to become the default); before,
 * per-CPU was what no flag meant.
 */
#if VHBA_KERNEL_SINCE(6, 17, 0)
#define VHBA_WQ_PERCPU	WQ_PERCPU
#else
#define VHBA_WQ_PERCPU	0
#endif

/*
 * ->queuecommand adaptor.  vhba_queue_cmd() returns 0 or
 * SCSI_MLQUEUE_HOST_BUSY.
 */
static int vhba_queue_cmd(struct Scsi_Host *shost, struct scsi_cmnd *cmd);

#if VHBA_KERNEL_SINCE(7, 0, 0)
/* 7.0: ->queuecommand returns enum scsi_qc_status instead of int */
static enum scsi_qc_status vhba_queuecommand(struct Scsi_Host *shost,
					     struct scsi_cmnd *cmd)
{
	return vhba_queue_cmd(shost, cmd);
}
#else
static int vhba_queuecommand(struct Scsi_Host *shost, struct scsi_cmnd *cmd)
{
	return vhba_queue_cmd(shost, cmd);
}
#endif

/*
 * Device configuration adaptor: vhba_configure() runs once INQUIRY has
 * told the device's type, before an upper driver may bind.  The template
 * sets ->sdev_configure if VHBA_SDEV_CONFIGURE, else ->slave_configure.
 */
static int vhba_configure(struct scsi_device *sdev);

#if VHBA_KERNEL_SINCE(6, 14, 0)
/* 6.14: ->slave_configure became ->sdev_configure, with queue limits */
#define VHBA_SDEV_CONFIGURE
static int vhba_sdev_configure(struct scsi_device *sdev,
			       struct queue_limits *lim)
{
	return vhba_configure(sdev);
}
#else
static int vhba_sdev_configure(struct scsi_device *sdev)
{
	return vhba_configure(sdev);
}
#endif

/*
 * ->eh_timed_out adaptor.  vhba_timed_out() says whether it completed the
 * command itself (DONE), wants its timer re-armed (RESET_TIMER), or leaves
 * it to the midlayer's abort and recovery (NOT_HANDLED).
 */
enum vhba_timeout {
	VHBA_TIMEOUT_DONE,
	VHBA_TIMEOUT_RESET_TIMER,
	VHBA_TIMEOUT_NOT_HANDLED,
};

#if VHBA_KERNEL_SINCE(5, 10, 0)
static enum vhba_timeout vhba_timed_out(struct scsi_cmnd *cmd);
#endif

#if VHBA_KERNEL_SINCE(6, 2, 0)
/*
 * 6.2: ->eh_timed_out returns enum scsi_timeout_action, SCSI_EH_DONE for a
 * command the driver completed.  A completion that fault injection dropped
 * (fail_io_timeout) left the command in flight: the midlayer takes it then.
 */
static enum scsi_timeout_action vhba_eh_timed_out(struct scsi_cmnd *cmd)
{
	switch (vhba_timed_out(cmd)) {
	case VHBA_TIMEOUT_DONE:
		if (!test_bit(SCMD_STATE_COMPLETE, &cmd->state))
			return SCSI_EH_NOT_HANDLED;
		return SCSI_EH_DONE;
	case VHBA_TIMEOUT_RESET_TIMER:
		return SCSI_EH_RESET_TIMER;
	default:
		return SCSI_EH_NOT_HANDLED;
	}
}

#define VHBA_EH_TIMED_OUT	vhba_eh_timed_out
#elif VHBA_KERNEL_SINCE(5, 10, 0)
/*
 * Before 6.2 BLK_EH_DONE is also "not handled": the midlayer's timeout
 * handler (scsi_times_out() in 5.10, scsi_timeout() in 6.1) then aborts the
 * command unless scsi_done() already marked it complete
 * (SCMD_STATE_COMPLETE), which vhba_timed_out() has done when it says DONE.
 * Checked in 5.10's and 6.1's scsi_error.c.
 */
static enum blk_eh_timer_return vhba_eh_timed_out(struct scsi_cmnd *cmd)
{
	if (vhba_timed_out(cmd) == VHBA_TIMEOUT_RESET_TIMER)
		return BLK_EH_RESET_TIMER;
	return BLK_EH_DONE;
}

#define VHBA_EH_TIMED_OUT	vhba_eh_timed_out
#endif
/*
 * Older kernels (not checked) keep the midlayer's own course: abort, retry,
 * and error recovery of the whole host after a second timeout.
 */

/* ->poll adaptor.  vhba_ctl_readable() says whether read() would succeed. */
static bool vhba_ctl_readable(struct file *file,
			      struct poll_table_struct *wait);

#if VHBA_KERNEL_SINCE(4, 16, 0)
/* 4.16: ->poll returns __poll_t, built from the EPOLL* constants */
static __poll_t vhba_ctl_poll(struct file *file,
			      struct poll_table_struct *wait)
{
	return vhba_ctl_readable(file, wait) ? EPOLLIN | EPOLLRDNORM : 0;
}
#else
static unsigned int vhba_ctl_poll(struct file *file,
				  struct poll_table_struct *wait)
{
	return vhba_ctl_readable(file, wait) ? POLLIN | POLLRDNORM : 0;
}
#endif

/* platform_driver ->remove adaptor around vhba_remove(). */
static void vhba_remove(struct platform_device *pdev);

#if VHBA_KERNEL_SINCE(6, 11, 0)
/* 6.11: platform_driver.remove returns void */
static void vhba_platform_remove(struct platform_device *pdev)
{
	vhba_remove(pdev);
}
#else
static int vhba_platform_remove(struct platform_device *pdev)
{
	vhba_remove(pdev);
	return 0;
}
#endif

#endif /* VHBA_COMPAT_H */
