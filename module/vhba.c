// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vhba - virtual SCSI host bus adapter served from userspace
 *
 * Each open() of /dev/vhba_ctl creates a SCSI host of its own with one
 * device, 0:0:0.  Commands the midlayer queues to that device are handed
 * to the process holding the file descriptor through read(); the process
 * answers each one with write().  The record layouts and ioctl numbers are
 * fixed by existing userspace (cdemu-daemon), which finds its device by
 * the address ioctl and so follows whichever host it is on.
 *
 * A host per open, as usb-storage has a host per device, because each
 * responder may be hostile: the midlayer serialises a host's device scans
 * (its scan lock is held while INQUIRY and the upper drivers' probe
 * commands wait for the new device's responder) and runs one error
 * handler per host, so on a shared host one responder that answers slowly
 * or not at all would hold up every other user's drive.
 *
 * Direct reads (an extension cdemu-daemon never asks for): a responder may
 * hand the module its image file with VHBA_CTL_SET_DIRECT_READ.  From then
 * on plain READ(10)/READ(12) commands inside the image are served by a
 * work item reading that file with the responder's credentials, without a
 * round trip through userspace; every other command, and any read the work
 * item cannot complete, still goes to the responder.  Only regular files
 * the kernel can read are accepted, never one on a vhba drive.
 *
 * The responder may be hostile and a backing may stall forever, so nothing
 * here waits on either: a copy to or from userspace goes through a bounce
 * buffer and touches the command only under the lock, a direct read lands
 * in a buffer of its own, and a command that times out or that the
 * midlayer gives up on (abort, close) is taken away from whoever holds it
 * at once, as are the commands a device or host reset finds.
 * The only waits left are for the bounded steps that store data into a
 * command or complete it (FILLING, COMPLETING).
 *
 * Locking: one spinlock per host, vhba_host.lock, protects the host's
 * device pointer, every command slot and the device's slot lists.  It is
 * always taken with interrupts disabled and never held across a user
 * copy, a file read, a sleep or a call into the midlayer;
 * copies between a bounce buffer and a command's pages are done under it,
 * after checking that the slot still carries that command.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/types.h>
#include <linux/bitops.h>
#include <linux/log2.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/list.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/miscdevice.h>
#include <linux/platform_device.h>
#include <linux/dma-mapping.h>
#include <linux/scatterlist.h>
#include <linux/uaccess.h>
#include <linux/compat.h>
#include <linux/cred.h>
#include <linux/kref.h>
#include <linux/idr.h>
#include <linux/mm.h>
#include <linux/blkdev.h>
#include <linux/vmalloc.h>
#include <linux/ratelimit.h>
#include <linux/magic.h>
#include <linux/major.h>
#include <scsi/scsi.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>

#include "vhba_compat.h"

#ifndef VHBA_VERSION
#error "VHBA_VERSION is not defined: build through module/Makefile"
#endif

#define VHBA_NAME		"vhba"

/* at most this many devices (hosts) at once: upstream's 16 buses of 15 */
#define VHBA_MAX_DEVICES	240
#define VHBA_MAX_CDB		16

#define VHBA_CAN_QUEUE_DEF	32
#define VHBA_CAN_QUEUE_MAX	256
#define VHBA_MIN_SENSE		8	/* response code .. additional length */
#define VHBA_MAX_SECTORS_DEF	256	/* 128 KiB, as cdemu-daemon needs */
#define VHBA_MAX_SECTORS_MAX	8192	/* 4 MiB */
#define VHBA_SG_TABLESIZE	256

/* Raw numbers, not _IO() encoded: fixed by existing userspace. */
#define VHBA_CTL_GET_ADDRESS	0x0BEEF001	/* u32[4]: H, C, T, L */
#define VHBA_CTL_GET_DEVNUM	0x0BEEF002	/* u32: device number */

/* vhba-lab extension: argument of VHBA_CTL_SET_DIRECT_READ */
struct vhba_direct_read {
	__s32 fd;		/* image open for reading; -1 turns it off */
	__u32 block_size;	/* bytes per block: 512 to 4096, power of 2 */
	__u64 offset;		/* file offset of block 0 */
	__u64 blocks;		/* blocks 0 .. blocks - 1 are served */
};

#define VHBA_CTL_SET_DIRECT_READ	_IOW(0xBE, 0xD1, struct vhba_direct_read)

/*
 * Command tag as seen by userspace: slot index in the low bits, a
 * generation count in the rest.  The generation is bumped each time a
 * slot is handed out, so an answer that arrives after its command was
 * aborted or failed never matches the slot's next command.
 */
#define VHBA_TAG_SLOT_BITS	8
#define VHBA_TAG_SLOT_MASK	((1U << VHBA_TAG_SLOT_BITS) - 1)

/* Header of every read(), followed by the data-out bytes, if any. */
struct vhba_request {
	__u32 metatag;
	__u32 lun;
	__u8 cdb[VHBA_MAX_CDB];
	__u8 cdb_len;
	__u8 reserved[3];	/* always zero */
	__u32 data_len;		/* transfer length, either direction */
};

/* Header of every write(), followed by sense or data-in bytes. */
struct vhba_response {
	__u32 metatag;
	__u32 status;		/* SCSI result; non-zero: sense follows */
	__u32 data_len;		/* sense or data-in bytes that follow */
};

enum vhba_slot_state {
	VHBA_SLOT_FREE,
	VHBA_SLOT_PENDING,	/* queued, not read by userspace yet */
	VHBA_SLOT_READING,	/* read() is copying it out */
	VHBA_SLOT_SENT,		/* userspace has it, answer awaited */
	VHBA_SLOT_WRITING,	/* write() is copying the answer in */
	VHBA_SLOT_DIRECT,	/* its work item is reading the backing */
	VHBA_SLOT_FILLING,	/* the work item stores the data (bounded) */
	VHBA_SLOT_COMPLETING,	/* being handed back to the midlayer (bounded) */
	VHBA_SLOT_ORPHAN,	/* command taken away; its work item still runs */
};

/*
 * An image file direct reads are served from.  Fixed once published; one
 * reference is held by the device, one by each direct read in flight.
 */
struct vhba_backing {
	struct kref kref;
	struct file *file;
	const struct cred *cred;	/* of whoever set it: reads run as them */
	bool in_memory;			/* tmpfs or memfd: reads cannot stall */
	u64 offset;
	u64 blocks;
	unsigned int block_shift;
};

struct vhba_device;
struct vhba_host;

/*
 * One command in flight.  All fields are protected by vhba_host.lock.
 * @node is on exactly one list: vhba_host.free_slots (FREE),
 * vhba_device.pending (PENDING), vhba_device.active (READING, SENT,
 * WRITING, DIRECT, FILLING), a private list of the completing thread
 * (COMPLETING), or none (ORPHAN, and COMPLETING from a work item).
 *
 * READING, SENT, WRITING and DIRECT slots can be taken away from their
 * owner at any time: a thread copying to or from userspace rechecks @tag
 * and @state under the lock before each step, and a slot whose work item
 * is still running (@work_busy) becomes an ORPHAN that the work item frees.
 * FILLING and COMPLETING slots are waited for; both steps are bounded.
 */
struct vhba_slot {
	struct list_head node;
	struct vhba_host *vhost;	/* constant */
	struct scsi_cmnd *cmd;
	struct vhba_device *vdev;	/* NULL once the fd is closed */
	u32 tag;
	enum vhba_slot_state state;
	bool waited;			/* someone sleeps until it moves on */
	bool work_busy;			/* @direct_work queued or running */
	struct vhba_backing *backing;	/* of the direct read in flight */
	loff_t pos;			/* its file offset */
	unsigned int len;		/* its length in bytes */
	struct work_struct direct_work;	/* runs vhba_direct_work() */
};

/*
 * One open control fd, i.e. one SCSI device.  @vhost never changes; the
 * lists are protected by vhba_host.lock.
 */
struct vhba_device {
	struct vhba_host *vhost;
	struct list_head pending;	/* PENDING slots, oldest first */
	struct list_head active;	/* slots userspace is working on */
	wait_queue_head_t read_wait;	/* woken on new PENDING slots */
	struct vhba_backing *backing;	/* direct reads, or NULL */
};

/*
 * The SCSI host of one open fd, in the Scsi_Host private area, slots
 * included, so it is freed with the host, whoever holds that last: a
 * user who keeps the drive's /dev/srN open may still call the reset
 * handlers after close.  @ref keeps the host from being freed while a
 * direct read still runs on a slot; the fd's own reference goes when the
 * host has been removed (@remove_work).  The device number is freed only
 * with the host, so no more than VHBA_MAX_DEVICES hosts ever exist.
 */
struct vhba_host {
	struct Scsi_Host *shost;
	spinlock_t lock;		/* see the top of this file */
	/* protected by @lock */
	struct vhba_device *vdev;	/* NULL once the fd is closed */
	struct list_head free_slots;	/* least recently used first */
	unsigned int direct_busy;	/* slots whose direct work runs */
	/* constant after vhba_host_new() */
	unsigned int nr_slots;
	unsigned int direct_max;	/* most slots direct works may hold */
	unsigned int *num_res;		/* device number, freed with the host */
	struct kref ref;
	struct work_struct add_work;	/* adds the SCSI device, once */
	struct work_struct remove_work;	/* removes the host, after close */
	wait_queue_head_t slot_wait;	/* woken when a waited slot moves on */
	struct vhba_slot slots[];	/* @nr_slots of them */
};

/* Parent of every host: published by probe, cleared by remove. */
static struct device *vhba_parent;
static struct platform_device *vhba_pdev;
/* Device numbers (VHBA_CTL_GET_DEVNUM), one per host. */
static DEFINE_IDA(vhba_devnums);
/* Adds and removes hosts' devices; drained at unload. */
static struct workqueue_struct *vhba_host_wq;
/* Runs direct reads; high priority, as a waiting reader is their only user. */
static struct workqueue_struct *vhba_direct_wq;
/*
 * Direct reads queued or running, on all hosts.  vhba_direct_wq runs at
 * most 256 work items a CPU (the default limit since 2.6.36; more on newer
 * kernels) and holds newer ones back until one ends, so one user's drives
 * with a stalled backing could fill a CPU's share and make every other
 * drive's direct reads wait there until they time out.  Kept below that
 * limit: past it, a READ goes to its responder like any other command.
 */
#define VHBA_DIRECT_INFLIGHT_MAX	128
static atomic_t vhba_direct_inflight = ATOMIC_INIT(0);

static int vhba_can_queue = VHBA_CAN_QUEUE_DEF;
module_param_named(can_queue, vhba_can_queue, int, 0444);
MODULE_PARM_DESC(can_queue,
		 "Commands in flight per device (each has a host of its own), 1-256 (default 32)");

static int vhba_max_sectors = VHBA_MAX_SECTORS_DEF;
module_param_named(max_sectors, vhba_max_sectors, int, 0444);
MODULE_PARM_DESC(max_sectors,
		 "Largest command in 512-byte sectors, 256-8192 (default 256 = 128 KiB); larger values need a responder whose read() buffer holds 32 + max_sectors * 512 bytes, which cdemu-daemon does not have");

static bool vhba_direct_reads = true;
module_param_named(direct_reads, vhba_direct_reads, bool, 0644);
MODULE_PARM_DESC(direct_reads,
		 "Let responders have READ commands served from their image file in the kernel (default Y); N refuses new requests");

/* Messages a responder can trigger: a hostile one must not flood the log. */
static DEFINE_RATELIMIT_STATE(vhba_status_rs, 5 * HZ, 10);

static bool vhba_cmd_is_data_out(struct scsi_cmnd *cmd)
{
	return cmd->sc_data_direction == DMA_TO_DEVICE ||
	       cmd->sc_data_direction == DMA_BIDIRECTIONAL;
}

static bool vhba_cmd_is_data_in(struct scsi_cmnd *cmd)
{
	return cmd->sc_data_direction == DMA_FROM_DEVICE ||
	       cmd->sc_data_direction == DMA_BIDIRECTIONAL;
}

/* Whether @sdev is the one device vhba creates on its host, 0:0:0. */
static bool vhba_sdev_ours(struct scsi_device *sdev)
{
	return sdev->channel == 0 && sdev->id == 0 && sdev->lun == 0;
}

/*
 * Take a free slot for @cmd and queue it on @vdev.  Called with
 * vhost->lock held.  Returns NULL when all slots are in use.
 */
static struct vhba_slot *vhba_slot_get(struct vhba_host *vhost,
				       struct vhba_device *vdev,
				       struct scsi_cmnd *cmd)
{
	struct vhba_slot *slot;

	slot = list_first_entry_or_null(&vhost->free_slots, struct vhba_slot,
					node);
	if (!slot)
		return NULL;

	list_move_tail(&slot->node, &vdev->pending);
	slot->tag += 1U << VHBA_TAG_SLOT_BITS;	/* new generation */
	slot->cmd = cmd;
	slot->vdev = vdev;
	slot->state = VHBA_SLOT_PENDING;
	return slot;
}

/* Wake whoever waits for @slot to move on.  Called with vhost->lock held. */
static void vhba_slot_moved_on(struct vhba_host *vhost, struct vhba_slot *slot)
{
	if (slot->waited) {
		slot->waited = false;
		wake_up_all(&vhost->slot_wait);
	}
}

/*
 * Take @slot's command away and free the slot; if its work item is still
 * running, the slot becomes an ORPHAN that the work item frees.  Wakes
 * whoever waits for the slot.  Called with vhost->lock held, never on a
 * FILLING slot.
 */
static void vhba_slot_put(struct vhba_host *vhost, struct vhba_slot *slot)
{
	vhba_slot_moved_on(vhost, slot);
	slot->cmd = NULL;
	slot->vdev = NULL;
	if (slot->work_busy) {
		list_del_init(&slot->node);
		slot->state = VHBA_SLOT_ORPHAN;
		return;
	}
	list_move_tail(&slot->node, &vhost->free_slots);
	slot->state = VHBA_SLOT_FREE;
}

/* Slot currently carrying @tag, or NULL.  Called with vhost->lock held. */
static struct vhba_slot *vhba_slot_by_tag(struct vhba_host *vhost, u32 tag)
{
	u32 idx = tag & VHBA_TAG_SLOT_MASK;
	struct vhba_slot *slot;

	if (idx >= vhost->nr_slots)
		return NULL;
	slot = &vhost->slots[idx];
	if (slot->state == VHBA_SLOT_FREE || slot->state == VHBA_SLOT_ORPHAN ||
	    slot->tag != tag)
		return NULL;
	return slot;
}

/* Whether @slot still carries @tag in @state.  Called with vhost->lock held. */
static bool vhba_slot_is(const struct vhba_slot *slot, u32 tag,
			 enum vhba_slot_state state)
{
	return slot->tag == tag && slot->state == state;
}

/*
 * Slot carrying @cmd, or NULL.  A slot still COMPLETING an earlier use of
 * the same scsi_cmnd is returned only if there is no other.  Called with
 * vhost->lock held.
 */
static struct vhba_slot *vhba_slot_by_cmd(struct vhba_host *vhost,
					  struct scsi_cmnd *cmd)
{
	struct vhba_slot *found = NULL;
	unsigned int i;

	for (i = 0; i < vhost->nr_slots; i++) {
		struct vhba_slot *slot = &vhost->slots[i];

		if (slot->state == VHBA_SLOT_FREE ||
		    slot->state == VHBA_SLOT_ORPHAN || slot->cmd != cmd)
			continue;
		if (slot->state != VHBA_SLOT_COMPLETING)
			return slot;
		found = slot;
	}
	return found;
}

/* A step whose owner cannot be interrupted, and whose end is waited for. */
static bool vhba_slot_bounded(const struct vhba_slot *slot)
{
	return slot->state == VHBA_SLOT_FILLING ||
	       slot->state == VHBA_SLOT_COMPLETING;
}

/* Wait condition of vhba_slot_wait().  Takes vhost->lock. */
static bool vhba_slot_moved(struct vhba_host *vhost, struct vhba_slot *slot,
			    u32 tag, enum vhba_slot_state state)
{
	unsigned long flags;
	bool moved;

	spin_lock_irqsave(&vhost->lock, flags);
	moved = !vhba_slot_is(slot, tag, state);
	spin_unlock_irqrestore(&vhost->lock, flags);
	return moved;
}

/*
 * Sleep until @slot leaves the bounded step it is in.  Called with
 * vhost->lock held (saved in *@flags); drops it while sleeping and returns
 * with it held again.  FILLING and COMPLETING copy kernel memory and call
 * scsi_done(): nothing userspace or a backing controls.
 */
static void vhba_slot_wait(struct vhba_host *vhost, struct vhba_slot *slot,
			   unsigned long *flags)
	__must_hold(&vhost->lock)
{
	u32 tag = slot->tag;
	enum vhba_slot_state state = slot->state;

	slot->waited = true;
	spin_unlock_irqrestore(&vhost->lock, *flags);
	wait_event(vhost->slot_wait, vhba_slot_moved(vhost, slot, tag, state));
	spin_lock_irqsave(&vhost->lock, *flags);
}

/* Whether a read() on @vdev would find a command.  Takes vhost->lock. */
static bool vhba_dev_has_pending(struct vhba_device *vdev)
{
	unsigned long flags;
	bool ret;

	spin_lock_irqsave(&vdev->vhost->lock, flags);
	ret = !list_empty(&vdev->pending);
	spin_unlock_irqrestore(&vdev->vhost->lock, flags);
	return ret;
}

/*
 * Hand @slot's command back to the midlayer and free the slot.  Called in
 * process context without vhost->lock; the caller moved the slot to
 * COMPLETING and unlinked it from its device, so nobody else touches it.
 */
static void vhba_slot_complete(struct vhba_host *vhost, struct vhba_slot *slot,
			       int result, unsigned int resid)
{
	struct scsi_cmnd *cmd = slot->cmd;
	unsigned long flags;

	cmd->result = result;
	scsi_set_resid(cmd, resid);
	vhba_cmd_done(cmd);

	spin_lock_irqsave(&vhost->lock, flags);
	vhba_slot_put(vhost, slot);
	spin_unlock_irqrestore(&vhost->lock, flags);
}

/* The @n-byte big-endian number at @p (CDB fields are not aligned). */
static u32 vhba_get_be(const u8 *p, unsigned int n)
{
	u32 v = 0;

	while (n--)
		v = (v << 8) | *p++;
	return v;
}

/*
 * Whether @backing can serve @cmd: READ(10) or READ(12) of at least one
 * block inside the image, no protection information, and a data buffer of
 * exactly the blocks asked for.  If so, *@pos is the file offset to read.
 * Everything else goes to the responder, which knows the sense to answer.
 */
static bool vhba_direct_match(const struct vhba_backing *backing,
			      struct scsi_cmnd *cmd, loff_t *pos)
{
	const u8 *cdb = cmd->cmnd;
	u64 lba, count;

	if (cmd->sc_data_direction != DMA_FROM_DEVICE)
		return false;
	switch (cdb[0]) {
	case READ_10:
		if (cmd->cmd_len < 10)
			return false;
		count = vhba_get_be(cdb + 7, 2);
		break;
	case READ_12:
		if (cmd->cmd_len < 12)
			return false;
		count = vhba_get_be(cdb + 6, 4);
		break;
	default:
		return false;
	}
	if (cdb[1] & 0xe0)	/* RDPROTECT */
		return false;
	lba = vhba_get_be(cdb + 2, 4);
	if (!count || lba + count > backing->blocks ||
	    scsi_bufflen(cmd) != count << backing->block_shift)
		return false;
	*pos = backing->offset + (lba << backing->block_shift);
	return true;
}

static void vhba_backing_free(struct kref *kref)
{
	struct vhba_backing *backing = container_of(kref, struct vhba_backing,
						    kref);

	fput(backing->file);
	put_cred(backing->cred);
	kfree(backing);
}

/* Drop a reference.  Process context: the last one closes the file. */
static void vhba_backing_put(struct vhba_backing *backing)
{
	if (backing)
		kref_put(&backing->kref, vhba_backing_free);
}

/*
 * Our last reference to @vhost gone: its host was removed and no direct
 * read runs on a slot any more.  Process context (the host's release, if
 * this is its last reference, stops its error handler thread).
 */
static void vhba_host_release(struct kref *ref)
{
	struct vhba_host *vhost = container_of(ref, struct vhba_host, ref);

	scsi_host_put(vhost->shost);	/* may free @vhost */
}

static void vhba_host_put(struct vhba_host *vhost)
{
	kref_put(&vhost->ref, vhba_host_release);
}

/*
 * Read @len bytes at @pos of @backing into @buf, as the task that set the
 * backing: a file whose server checks the caller at read time (FUSE, NFS)
 * must see the responder's user, not the kworker's root.  Process context,
 * may sleep for as long as the file takes.  Returns false on an I/O error
 * or a file that ends early.
 */
static bool vhba_backing_read(struct vhba_backing *backing, char *buf,
			      size_t len, loff_t pos)
{
	const struct cred *old = override_creds(backing->cred);
	size_t done = 0;

	while (done < len) {
		ssize_t n = vhba_file_read(backing->file, buf + done,
					   len - done, &pos);

		if (n <= 0)
			break;
		done += n;
	}
	revert_creds(old);
	return done == len;
}

/*
 * Read @cmd's data straight into its pages from @backing at @pos, as the
 * task that set the backing.  Process context; only for a backing in RAM,
 * whose reads cannot stall, because the caller holds the slot FILLING (a
 * step others wait for).  Returns false on an error or a short file.
 */
static bool vhba_backing_read_sg(struct vhba_backing *backing,
				 struct scsi_cmnd *cmd, loff_t pos)
{
	const struct cred *old = override_creds(backing->cred);
	struct sg_mapping_iter miter;
	bool ok = true;

	sg_miter_start(&miter, scsi_sglist(cmd), scsi_sg_count(cmd),
		       SG_MITER_TO_SG);
	while (ok && sg_miter_next(&miter)) {
		size_t done = 0;

		while (done < miter.length) {
			ssize_t n = vhba_file_read(backing->file,
						   (char *)miter.addr + done,
						   miter.length - done, &pos);

			if (n <= 0) {
				ok = false;
				break;
			}
			done += n;
		}
	}
	sg_miter_stop(&miter);
	revert_creds(old);
	return ok;
}

/*
 * Work item of a direct read.  A backing in RAM is read straight into the
 * command's pages (FILLING, bounded).  Any other backing may take forever
 * (a stalled FUSE or NFS server), so it is read into a buffer of our own
 * while the command stays DIRECT: meanwhile it can be aborted, reset or
 * failed by close(), which leaves the slot an ORPHAN for us to free.  Only
 * if the slot still carries the command and the backing is still the
 * device's are the data stored (FILLING) and the command completed.  A
 * read that fails, or whose backing was replaced meanwhile, is queued for
 * the responder instead.  Process context.
 *
 * Holds a module reference from queue_work() to its end, so a stalled
 * read makes rmmod fail with EBUSY instead of waiting for it, and a host
 * reference, so a stalled read outlives its host's removal (the slot an
 * ORPHAN) without touching freed memory.
 */
static void vhba_direct_work(struct work_struct *work)
{
	struct vhba_slot *slot = container_of(work, struct vhba_slot,
					      direct_work);
	struct vhba_host *vhost = slot->vhost;
	struct vhba_backing *backing = slot->backing;
	unsigned int len = slot->len;
	struct scsi_cmnd *cmd = NULL;
	unsigned long flags;
	char *buf = NULL;
	bool ok = false;

	if (backing->in_memory) {
		spin_lock_irqsave(&vhost->lock, flags);
		if (slot->state == VHBA_SLOT_DIRECT &&
		    slot->vdev->backing == backing) {
			slot->state = VHBA_SLOT_FILLING;
			cmd = slot->cmd;
		}
		spin_unlock_irqrestore(&vhost->lock, flags);
		if (cmd)
			ok = vhba_backing_read_sg(backing, cmd, slot->pos);
	} else {
		buf = vhba_kvmalloc(len);
		ok = buf && vhba_backing_read(backing, buf, len, slot->pos);
	}

	spin_lock_irqsave(&vhost->lock, flags);
	slot->work_busy = false;
	vhost->direct_busy--;
	atomic_dec(&vhba_direct_inflight);
	switch (slot->state) {
	case VHBA_SLOT_ORPHAN:
		slot->backing = NULL;
		list_move_tail(&slot->node, &vhost->free_slots);
		slot->state = VHBA_SLOT_FREE;
		goto out_unlock;
	case VHBA_SLOT_FILLING:		/* read straight in */
		if (ok)
			goto complete;
		goto requeue;
	case VHBA_SLOT_DIRECT:
		if (!ok || slot->vdev->backing != backing)
			goto requeue;
		break;
	default:			/* close() or a reset completes it */
		slot->backing = NULL;
		goto out_unlock;
	}
	slot->state = VHBA_SLOT_FILLING;
	cmd = slot->cmd;
	spin_unlock_irqrestore(&vhost->lock, flags);

	sg_copy_from_buffer(scsi_sglist(cmd), scsi_sg_count(cmd), buf, len);

	spin_lock_irqsave(&vhost->lock, flags);
complete:
	slot->backing = NULL;
	slot->state = VHBA_SLOT_COMPLETING;
	list_del_init(&slot->node);
	vhba_slot_moved_on(vhost, slot);
	spin_unlock_irqrestore(&vhost->lock, flags);
	vhba_slot_complete(vhost, slot, SAM_STAT_GOOD, 0);
	goto out;

requeue:
	slot->backing = NULL;
	slot->state = VHBA_SLOT_PENDING;
	list_move(&slot->node, &slot->vdev->pending);
	wake_up_interruptible(&slot->vdev->read_wait);
	vhba_slot_moved_on(vhost, slot);
out_unlock:
	spin_unlock_irqrestore(&vhost->lock, flags);
out:
	kvfree(buf);
	vhba_backing_put(backing);
	vhba_host_put(vhost);
	module_put(THIS_MODULE);
}

/*
 * ->queuecommand.  Called by the midlayer, possibly on several CPUs at
 * once and in atomic context: never sleeps.
 */
static int vhba_queue_cmd(struct Scsi_Host *shost, struct scsi_cmnd *cmd)
{
	struct vhba_host *vhost = shost_priv(shost);
	struct vhba_device *vdev = NULL;
	struct vhba_slot *slot;
	unsigned long flags;

	spin_lock_irqsave(&vhost->lock, flags);
	if (vhba_sdev_ours(cmd->device))
		vdev = vhost->vdev;
	if (vdev) {
		slot = vhba_slot_get(vhost, vdev, cmd);
		if (!slot) {
			spin_unlock_irqrestore(&vhost->lock, flags);
			return SCSI_MLQUEUE_HOST_BUSY;
		}
		/*
		 * A work item stuck on a stalled backing keeps its slot even
		 * after its command was taken away: at most half the slots go
		 * to them (none if there is only one), so the responder always
		 * has slots for the commands that are not READs.
		 */
		if (vdev->backing && vhost->direct_busy < vhost->direct_max &&
		    vhba_direct_match(vdev->backing, cmd, &slot->pos) &&
		    atomic_add_unless(&vhba_direct_inflight, 1,
				      VHBA_DIRECT_INFLIGHT_MAX)) {
			slot->state = VHBA_SLOT_DIRECT;
			slot->backing = vdev->backing;
			slot->len = scsi_bufflen(cmd);
			slot->work_busy = true;
			vhost->direct_busy++;
			kref_get(&slot->backing->kref);
			kref_get(&vhost->ref);
			__module_get(THIS_MODULE);	/* the fd holds one too */
			list_move_tail(&slot->node, &vdev->active);
			queue_work(vhba_direct_wq, &slot->direct_work);
		} else {
			wake_up_interruptible(&vdev->read_wait);
		}
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (!vdev) {
		cmd->result = DID_NO_CONNECT << 16;
		vhba_cmd_done(cmd);
	}
	return 0;
}

/*
 * Take @slot's command away from whoever holds it (queued, with userspace,
 * being copied, being read from the backing) and free the slot: a late
 * answer then gets -EIO, a late direct read is thrown away.  Returns whether
 * userspace had been sent the command, and then its tag in *@tag.  Called
 * with vhost->lock held, never on a slot in a bounded step.
 */
static bool vhba_take_away(struct vhba_host *vhost, struct vhba_slot *slot,
			   u32 *tag)
{
	bool sent = slot->state == VHBA_SLOT_SENT;

	if (sent)
		*tag = slot->tag;
	vhba_slot_put(vhost, slot);
	return sent;
}

/* Say that userspace let @cmd, sent as @tag, time out.  No lock held. */
static void vhba_report_silence(struct scsi_cmnd *cmd, u32 tag)
{
	if (__ratelimit(&vhba_status_rs))
		scmd_printk(KERN_WARNING, cmd,
			    "responder did not answer tag %#x in time\n", tag);
}

#ifdef VHBA_EH_TIMED_OUT
/*
 * ->eh_timed_out.  Called from the block layer's timeout work (process
 * context) when @cmd has waited out its timeout.  A command of ours times
 * out only because its responder or its backing did not answer, which no
 * abort or reset can change; left to the midlayer, a second timeout of the
 * same command starts error recovery of the whole host, and every drive's
 * commands wait while it tries resets on a responder that stays silent.
 *
 * So the command is taken away here and completed, and only its own device
 * sees it: with DID_ABORT, which the midlayer reports as it is, without
 * retry or recovery (a reader gets EIO, SG_IO host_status 5), as it already
 * treats a timed-out passthrough command; a TEST UNIT READY or INQUIRY with
 * DID_TIME_OUT, which the midlayer reports the same way for those two and
 * on which the device scan retries an INQUIRY once.  A filesystem READ is
 * not retried (the midlayer's course retried it once after an abort).  A
 * command in a bounded step gets its timer again.  The midlayer has already
 * noted the timeout for eh_deadline, whose clock only its own recovery
 * resets: a host given an eh_deadline may skip aborts for later timeouts
 * that this handler leaves to it (a command it no longer holds).
 */
static enum vhba_timeout vhba_timed_out(struct scsi_cmnd *cmd)
{
	struct vhba_host *vhost = shost_priv(cmd->device->host);
	struct vhba_slot *slot;
	unsigned long flags;
	bool sent;
	u32 tag;

	spin_lock_irqsave(&vhost->lock, flags);
	slot = vhba_slot_by_cmd(vhost, cmd);
	if (!slot || vhba_slot_bounded(slot)) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		/* completed meanwhile, or about to be */
		return slot ? VHBA_TIMEOUT_RESET_TIMER : VHBA_TIMEOUT_NOT_HANDLED;
	}
	sent = vhba_take_away(vhost, slot, &tag);
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (sent)
		vhba_report_silence(cmd, tag);
	if (cmd->cmnd[0] == TEST_UNIT_READY || cmd->cmnd[0] == INQUIRY)
		cmd->result = DID_TIME_OUT << 16;
	else
		cmd->result = DID_ABORT << 16;
	scsi_set_resid(cmd, scsi_bufflen(cmd));
	vhba_cmd_done(cmd);
	return VHBA_TIMEOUT_DONE;
}
#endif

/*
 * ->eh_abort_handler.  Called from the abort work item or the SCSI error
 * handler (process context, may sleep) for a command that timed out.
 * Wherever the command is, it is taken away at once and SUCCESS returned;
 * only a command being stored into or completed is waited for.
 */
static int vhba_abort(struct scsi_cmnd *cmd)
{
	struct vhba_host *vhost = shost_priv(cmd->device->host);
	struct vhba_slot *slot;
	unsigned long flags;
	bool sent = false;
	u32 tag = 0;

	spin_lock_irqsave(&vhost->lock, flags);
	while ((slot = vhba_slot_by_cmd(vhost, cmd))) {
		if (vhba_slot_bounded(slot))
			vhba_slot_wait(vhost, slot, &flags);
		else if (vhba_take_away(vhost, slot, &tag))
			sent = true;
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (sent)
		vhba_report_silence(cmd, tag);
	return SUCCESS;
}

/*
 * Whether a reset may find commands in our slots that the midlayer has
 * given up on, which it must then only take away.  Since 5.10
 * vhba_timed_out() takes every timed-out command itself, so the error
 * handler, which runs once all of the host's commands have failed, finds
 * the slots empty, and whatever a reset finds (root's SG_SCSI_RESET, the
 * error handler's own TEST UNIT READY) is live.  Before, a command that
 * times out a second time, or once eh_deadline has passed, reaches the
 * error handler still in its slot, and the host is then in a recovery
 * state.  (Not scsi_host_in_recovery(): it counts tmf_in_progress, which
 * SG_SCSI_RESET sets.)  Takes the host lock.
 */
#ifdef VHBA_EH_TIMED_OUT
static bool vhba_slots_given_up(struct Scsi_Host *shost)
{
	return false;
}
#else
static bool vhba_slots_given_up(struct Scsi_Host *shost)
{
	enum scsi_host_state state;
	unsigned long flags;

	spin_lock_irqsave(shost->host_lock, flags);
	state = shost->shost_state;
	spin_unlock_irqrestore(shost->host_lock, flags);
	return state == SHOST_RECOVERY || state == SHOST_CANCEL_RECOVERY ||
	       state == SHOST_DEL_RECOVERY;
}
#endif

/*
 * The reset handlers' work: every command of @sdev, or of every device if
 * @sdev is NULL, leaves its slot.  A live command is completed with
 * DID_RESET, as a real drive's reset ends its commands: the midlayer
 * retries it for the block layer and reports it to a passthrough caller;
 * dropped, it would wait for its own timeout.  One the midlayer has given
 * up on (see vhba_slots_given_up()) it completes or retries itself after
 * SUCCESS, so it is only taken away.  Process context.
 */
static void vhba_reset_commands(struct vhba_host *vhost,
				struct scsi_device *sdev)
{
	bool live = !vhba_slots_given_up(vhost->shost);
	struct vhba_slot *slot, *next;
	unsigned long flags;
	unsigned int i;
	LIST_HEAD(done);

	spin_lock_irqsave(&vhost->lock, flags);
	for (i = 0; i < vhost->nr_slots; i++) {
		slot = &vhost->slots[i];
		while (slot->cmd && (!sdev || slot->cmd->device == sdev) &&
		       vhba_slot_bounded(slot))
			vhba_slot_wait(vhost, slot, &flags);
		if (!slot->cmd || (sdev && slot->cmd->device != sdev))
			continue;
		if (!live) {
			vhba_slot_put(vhost, slot);
			continue;
		}
		/* as close() does: a read() or write() on it rechecks and lets go */
		slot->state = VHBA_SLOT_COMPLETING;
		list_move_tail(&slot->node, &done);
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	list_for_each_entry_safe(slot, next, &done, node) {
		list_del_init(&slot->node);
		vhba_slot_complete(vhost, slot, DID_RESET << 16,
				   scsi_bufflen(slot->cmd));
	}
}

/*
 * Device configuration: process context, once INQUIRY has told the
 * device's type, before any upper driver may bind.  vhba serves CD/DVD
 * drives; a device of another type gets no upper driver, only its sg
 * node: sd probes a disk asynchronously, and every module load on the
 * machine waits for all asynchronous probes, which its responder could
 * stall for minutes.
 */
static int vhba_configure(struct scsi_device *sdev)
{
	if (sdev->type != TYPE_ROM && sdev->type != TYPE_WORM) {
		sdev->no_uld_attach = 1;
		if (__ratelimit(&vhba_status_rs))
			sdev_printk(KERN_NOTICE, sdev,
				    "type %#x is not a CD/DVD drive: sg only\n",
				    sdev->type);
	}
	return 0;
}

/*
 * ->eh_device_reset_handler: process context (the SCSI error handler, or
 * root's SG_SCSI_RESET).
 */
static int vhba_device_reset(struct scsi_cmnd *cmd)
{
	vhba_reset_commands(shost_priv(cmd->device->host), cmd->device);
	sdev_printk(KERN_INFO, cmd->device, "device reset\n");
	return SUCCESS;
}

/*
 * ->eh_host_reset_handler: process context (the SCSI error handler, or
 * root's SG_SCSI_RESET).
 */
static int vhba_host_reset(struct scsi_cmnd *cmd)
{
	vhba_reset_commands(shost_priv(cmd->device->host), NULL);
	shost_printk(KERN_INFO, cmd->device->host, "host reset\n");
	return SUCCESS;
}

static struct scsi_host_template vhba_template = {
	.module			= THIS_MODULE,
	.name			= VHBA_NAME,
	.proc_name		= VHBA_NAME,
	.queuecommand		= vhba_queuecommand,
	.eh_abort_handler	= vhba_abort,
	.eh_device_reset_handler = vhba_device_reset,
	.eh_host_reset_handler	= vhba_host_reset,
#ifdef VHBA_SDEV_CONFIGURE
	.sdev_configure		= vhba_sdev_configure,
#else
	.slave_configure	= vhba_sdev_configure,
#endif
#ifdef VHBA_EH_TIMED_OUT
	.eh_timed_out		= VHBA_EH_TIMED_OUT,
#endif
	.can_queue		= VHBA_CAN_QUEUE_DEF,
	.cmd_per_lun		= VHBA_CAN_QUEUE_DEF,
	.this_id		= -1,
	.sg_tablesize		= VHBA_SG_TABLESIZE,
	.max_sectors		= VHBA_MAX_SECTORS_DEF,
};

/*
 * Copy the first @len data-out bytes of @slot's command (tag @tag, being
 * READING) to @ubuf, a page at a time through @bounce.  Process context.
 * A scatterlist shorter than @len is padded with zeroes.  Returns 0,
 * -EFAULT, or -ESTALE if the command was taken away meanwhile.
 */
static int vhba_copy_out(struct vhba_host *vhost, struct vhba_slot *slot,
			 u32 tag, char *bounce, char __user *ubuf,
			 unsigned int len)
{
	unsigned int done = 0;
	unsigned long flags;

	while (done < len) {
		size_t n = min_t(size_t, PAGE_SIZE, len - done);
		size_t got;

		spin_lock_irqsave(&vhost->lock, flags);
		if (!vhba_slot_is(slot, tag, VHBA_SLOT_READING)) {
			spin_unlock_irqrestore(&vhost->lock, flags);
			return -ESTALE;
		}
		got = sg_pcopy_to_buffer(scsi_sglist(slot->cmd),
					 scsi_sg_count(slot->cmd), bounce, n,
					 done);
		spin_unlock_irqrestore(&vhost->lock, flags);

		memset(bounce + got, 0, n - got);
		if (copy_to_user(ubuf + done, bounce, n))
			return -EFAULT;
		done += n;
	}
	return 0;
}

/*
 * Copy up to *@len data-in bytes from @ubuf into @slot's command (tag
 * @tag, being WRITING), a page at a time through @bounce; on return *@len
 * is the number of bytes stored.  Process context.  Returns 0, -EFAULT, or
 * -ESTALE if the command was taken away meanwhile.
 */
static int vhba_copy_in(struct vhba_host *vhost, struct vhba_slot *slot,
			u32 tag, char *bounce, const char __user *ubuf,
			unsigned int *len)
{
	unsigned int done = 0;
	unsigned long flags;
	int ret = 0;

	while (done < *len) {
		size_t n = min_t(size_t, PAGE_SIZE, *len - done);

		if (copy_from_user(bounce, ubuf + done, n)) {
			ret = -EFAULT;
			break;
		}
		spin_lock_irqsave(&vhost->lock, flags);
		if (!vhba_slot_is(slot, tag, VHBA_SLOT_WRITING)) {
			spin_unlock_irqrestore(&vhost->lock, flags);
			ret = -ESTALE;
			break;
		}
		n = sg_pcopy_from_buffer(scsi_sglist(slot->cmd),
					 scsi_sg_count(slot->cmd), bounce, n,
					 done);
		spin_unlock_irqrestore(&vhost->lock, flags);
		if (!n)
			break;
		done += n;
	}
	*len = done;
	return ret;
}

/*
 * Whether a responder's status word and sense can be the command's SCSI
 * result; if not, the result is DID_ERROR.  The host and driver bytes are
 * ours to choose: a responder that sets them (DID_REQUEUE would have the
 * midlayer retry at its will) or sends a status byte that SAM does not
 * define is refused, and so is CHECK CONDITION without usable sense, which
 * would otherwise send every drive of the host into error recovery.
 */
static bool vhba_status_ok(u32 status, const u8 *sense, unsigned int sense_len)
{
	switch (status) {
	case SAM_STAT_GOOD:
	case SAM_STAT_CONDITION_MET:
	case SAM_STAT_BUSY:
	case SAM_STAT_RESERVATION_CONFLICT:
	case SAM_STAT_TASK_SET_FULL:
	case SAM_STAT_TASK_ABORTED:
		return true;
	case SAM_STAT_CHECK_CONDITION:
		return sense_len >= VHBA_MIN_SENSE && (sense[0] & 0x7c) == 0x70;
	default:
		return false;
	}
}

/*
 * read(): pass the oldest pending command to userspace as one record.
 * Process context; sleeps (interruptibly) unless O_NONBLOCK.  A command
 * taken away while its data-out bytes are being copied is forgotten and
 * the next one offered in its place.
 */
static ssize_t vhba_ctl_read(struct file *file, char __user *buf,
			     size_t count, loff_t *ppos)
{
	struct vhba_device *vdev = file->private_data;
	struct vhba_host *vhost = vdev->vhost;
	struct vhba_request req;
	struct vhba_slot *slot;
	struct scsi_cmnd *cmd;
	unsigned long flags;
	unsigned int payload;
	char *bounce = NULL;
	u32 tag;
	int ret;

again:
	spin_lock_irqsave(&vhost->lock, flags);
	while (list_empty(&vdev->pending)) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		ret = -EAGAIN;
		if (file->f_flags & O_NONBLOCK)
			goto out;
		ret = wait_event_interruptible(vdev->read_wait,
					       vhba_dev_has_pending(vdev));
		if (ret)
			goto out;
		spin_lock_irqsave(&vhost->lock, flags);
	}

	slot = list_first_entry(&vdev->pending, struct vhba_slot, node);
	cmd = slot->cmd;
	payload = vhba_cmd_is_data_out(cmd) ? scsi_bufflen(cmd) : 0;
	if (count < sizeof(req) + payload) {
		/* stays pending: a read with a bigger buffer gets it */
		spin_unlock_irqrestore(&vhost->lock, flags);
		ret = -EIO;
		goto out;
	}
	if (payload && !bounce) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		bounce = (char *)__get_free_page(GFP_KERNEL);
		if (!bounce)
			return -ENOMEM;
		goto again;
	}

	memset(&req, 0, sizeof(req));
	req.metatag = slot->tag;
	req.lun = (u32)cmd->device->lun;
	req.cdb_len = min_t(unsigned int, cmd->cmd_len, VHBA_MAX_CDB);
	memcpy(req.cdb, cmd->cmnd, req.cdb_len);
	req.data_len = scsi_bufflen(cmd);

	tag = slot->tag;
	slot->state = VHBA_SLOT_READING;
	list_move_tail(&slot->node, &vdev->active);
	spin_unlock_irqrestore(&vhost->lock, flags);

	ret = 0;
	if (copy_to_user(buf, &req, sizeof(req)))
		ret = -EFAULT;
	else if (payload)
		ret = vhba_copy_out(vhost, slot, tag, bounce,
				    buf + sizeof(req), payload);
	if (ret == -ESTALE)
		goto again;

	spin_lock_irqsave(&vhost->lock, flags);
	if (!vhba_slot_is(slot, tag, VHBA_SLOT_READING)) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		goto again;
	}
	if (ret) {
		/* back to the head of the queue, offered again */
		slot->state = VHBA_SLOT_PENDING;
		list_move(&slot->node, &vdev->pending);
		wake_up_interruptible(&vdev->read_wait);
	} else {
		slot->state = VHBA_SLOT_SENT;
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (!ret) {
		*ppos += sizeof(req) + payload;
		ret = sizeof(req) + payload;
	}
out:
	if (bounce)
		free_page((unsigned long)bounce);
	return ret;
}

/*
 * write(): the answer to one command previously read from this fd.
 * Process context.  Bytes beyond what the answer needs are ignored.  An
 * answer to a command that was taken away meanwhile gets -EIO, like one
 * that comes after.
 */
static ssize_t vhba_ctl_write(struct file *file, const char __user *buf,
			      size_t count, loff_t *ppos)
{
	struct vhba_device *vdev = file->private_data;
	struct vhba_host *vhost = vdev->vhost;
	const char __user *body = buf + sizeof(struct vhba_response);
	u8 sense[SCSI_SENSE_BUFFERSIZE];
	struct vhba_response resp;
	struct vhba_slot *slot;
	unsigned int len = 0, bufflen, resid = 0;
	unsigned long flags;
	char *bounce = NULL;
	bool data_in, status_ok;
	size_t avail;
	int ret = 0;

	if (count < sizeof(resp))
		return -EIO;
	if (copy_from_user(&resp, buf, sizeof(resp)))
		return -EFAULT;
	avail = count - sizeof(resp);

	spin_lock_irqsave(&vhost->lock, flags);
	slot = vhba_slot_by_tag(vhost, resp.metatag);
	if (!slot || slot->vdev != vdev || slot->state != VHBA_SLOT_SENT) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		return -EIO;
	}
	slot->state = VHBA_SLOT_WRITING;
	bufflen = scsi_bufflen(slot->cmd);
	data_in = vhba_cmd_is_data_in(slot->cmd);
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (resp.status) {
		/* error: sense only, no data-in */
		len = min_t(size_t, resp.data_len, SCSI_SENSE_BUFFERSIZE);
		len = min_t(size_t, len, avail);
		if (copy_from_user(sense, body, len))
			ret = -EFAULT;
		if (data_in)
			resid = bufflen;
	} else if (data_in && bufflen) {
		len = min_t(size_t, resp.data_len, bufflen);
		len = min_t(size_t, len, avail);
		bounce = (char *)__get_free_page(GFP_KERNEL);
		ret = bounce ? vhba_copy_in(vhost, slot, resp.metatag, bounce,
					    body, &len) : -ENOMEM;
		resid = bufflen - len;
	}

	spin_lock_irqsave(&vhost->lock, flags);
	if (!vhba_slot_is(slot, resp.metatag, VHBA_SLOT_WRITING)) {
		ret = -EIO;	/* taken away meanwhile */
		goto out_unlock;
	}
	if (ret) {
		/* may be retried */
		slot->state = VHBA_SLOT_SENT;
		goto out_unlock;
	}
	status_ok = vhba_status_ok(resp.status, sense, len);
	if (resp.status && status_ok) {
		memcpy(slot->cmd->sense_buffer, sense, len);
		memset(slot->cmd->sense_buffer + len, 0,
		       SCSI_SENSE_BUFFERSIZE - len);
	}
	slot->state = VHBA_SLOT_COMPLETING;
	list_del_init(&slot->node);
	spin_unlock_irqrestore(&vhost->lock, flags);

	/* COMPLETING: the command stays ours until vhba_slot_complete() */
	if (!status_ok && __ratelimit(&vhba_status_rs))
		scmd_printk(KERN_NOTICE, slot->cmd,
			    "responder status %#x refused\n", resp.status);
	vhba_slot_complete(vhost, slot,
			   status_ok ? (int)resp.status : DID_ERROR << 16, resid);
	ret = sizeof(resp) + len;
	goto out;

out_unlock:
	spin_unlock_irqrestore(&vhost->lock, flags);
out:
	if (bounce)
		free_page((unsigned long)bounce);
	return ret;
}

/* ->poll helper: process context.  See vhba_ctl_poll() in vhba_compat.h. */
static bool vhba_ctl_readable(struct file *file,
			      struct poll_table_struct *wait)
{
	struct vhba_device *vdev = file->private_data;

	poll_wait(file, &vdev->read_wait, wait);
	return vhba_dev_has_pending(vdev);
}

static long vhba_ctl_get_address(struct vhba_device *vdev,
				 unsigned int __user *uaddr)
{
	unsigned int addr[4] = { vdev->vhost->shost->host_no, 0, 0, 0 };

	return copy_to_user(uaddr, addr, sizeof(addr)) ? -EFAULT : 0;
}

/*
 * Whether @file lives on a vhba drive: its filesystem's block device is a
 * disk whose parent is a SCSI device of a vhba host.  A direct read from
 * it would wait on a responder, possibly on the very drive it serves.
 */
static bool vhba_file_on_vhba(struct file *file)
{
	struct block_device *bdev = file_inode(file)->i_sb->s_bdev;
	struct device *parent;

	if (!bdev || !bdev->bd_disk)
		return false;
	parent = disk_to_dev(bdev->bd_disk)->parent;
	return parent && scsi_is_sdev_device(parent) &&
	       to_scsi_device(parent)->host->hostt == &vhba_template;
}

/*
 * Whether @file lives on a loop device.  Which file a loop device reads is
 * not visible to modules, and any seat user can set one up (udisks): one
 * reading a vhba drive would make a direct read wait on that drive's
 * responder just as a file on the drive itself would.
 */
static bool vhba_file_on_loop(struct file *file)
{
	struct block_device *bdev = file_inode(file)->i_sb->s_bdev;

	return bdev && bdev->bd_disk && bdev->bd_disk->major == LOOP_MAJOR;
}

/*
 * Whether @file's data live in RAM: tmpfs (memfd files included), whose
 * reads wait for nothing a user controls.  By superblock magic, which every
 * kernel has (shmem_mapping() is not exported before 6.x).
 */
static bool vhba_file_in_memory(struct file *file)
{
	return file_inode(file)->i_sb->s_magic == TMPFS_MAGIC;
}

/*
 * A backing for @arg: a regular file open for reading, that the kernel can
 * read, not on a vhba drive, a loop device or a stacked filesystem (whose
 * lower layer might be a vhba drive), and an image that fits in loff_t.
 * Block devices are refused: a drive's own node, or one stacked on it,
 * would deadlock.
 * Process context; the backing keeps the caller's credentials.
 */
static struct vhba_backing *vhba_backing_new(const struct vhba_direct_read *arg)
{
	struct vhba_backing *backing;
	struct file *file;
	unsigned int shift;
	int ret;

	if (arg->block_size < 512 || arg->block_size > 4096 ||
	    !is_power_of_2(arg->block_size) || !arg->blocks)
		return ERR_PTR(-EINVAL);
	shift = ilog2(arg->block_size);
	if (arg->offset > S64_MAX ||
	    arg->blocks > (S64_MAX - arg->offset) >> shift)
		return ERR_PTR(-EINVAL);

	file = fget(arg->fd);
	if (!file)
		return ERR_PTR(-EBADF);
	ret = -EBADF;
	if (!(file->f_mode & FMODE_READ))
		goto err_put_file;
	ret = -EINVAL;
	if (!S_ISREG(file_inode(file)->i_mode) ||
	    !vhba_file_kernel_readable(file) ||
	    vhba_sb_stacked(file_inode(file)->i_sb) || vhba_file_on_vhba(file) ||
	    vhba_file_on_loop(file))
		goto err_put_file;
	ret = -ENOMEM;
	backing = kzalloc(sizeof(*backing), GFP_KERNEL);
	if (!backing)
		goto err_put_file;
	kref_init(&backing->kref);
	backing->file = file;
	backing->cred = get_current_cred();
	backing->in_memory = vhba_file_in_memory(file);
	backing->offset = arg->offset;
	backing->blocks = arg->blocks;
	backing->block_shift = shift;
	return backing;

err_put_file:
	fput(file);
	return ERR_PTR(ret);
}

/*
 * Whether a direct read from @backing is storing data into a command of
 * @vdev.  Called with vhost->lock held; sets *@slotp to that slot.
 */
static bool vhba_dev_filling(struct vhba_device *vdev,
			     const struct vhba_backing *backing,
			     struct vhba_slot **slotp)
{
	struct vhba_slot *slot;

	list_for_each_entry(slot, &vdev->active, node) {
		if (slot->state == VHBA_SLOT_FILLING &&
		    slot->backing == backing) {
			*slotp = slot;
			return true;
		}
	}
	return false;
}

/*
 * VHBA_CTL_SET_DIRECT_READ: serve reads from a new backing (fd >= 0) or
 * from none (fd < 0).  Process context.  Returns once no data read from
 * the old backing can reach a command any more: reads still in flight
 * from it are handed to the responder when they end, and one being stored
 * (bounded) is waited for.
 */
static long vhba_ctl_set_direct_read(struct vhba_device *vdev,
				     const void __user *uarg)
{
	struct vhba_host *vhost = vdev->vhost;
	struct vhba_backing *backing = NULL, *old;
	struct vhba_direct_read arg;
	struct vhba_slot *slot;
	unsigned long flags;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.fd >= 0) {
		if (!READ_ONCE(vhba_direct_reads))
			return -EOPNOTSUPP;
		backing = vhba_backing_new(&arg);
		if (IS_ERR(backing))
			return PTR_ERR(backing);
	}

	spin_lock_irqsave(&vhost->lock, flags);
	old = vdev->backing;
	vdev->backing = backing;
	while (old && vhba_dev_filling(vdev, old, &slot))
		vhba_slot_wait(vhost, slot, &flags);
	spin_unlock_irqrestore(&vhost->lock, flags);

	vhba_backing_put(old);
	return 0;
}

/* ioctl(): process context. */
static long vhba_ctl_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	struct vhba_device *vdev = file->private_data;
	unsigned int __user *uarg = (unsigned int __user *)arg;

	switch (cmd) {
	case VHBA_CTL_GET_ADDRESS:
		return vhba_ctl_get_address(vdev, uarg);
	case VHBA_CTL_GET_DEVNUM:
		return put_user(*vdev->vhost->num_res, uarg);
	case VHBA_CTL_SET_DIRECT_READ:
		return vhba_ctl_set_direct_read(vdev, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

#ifdef CONFIG_COMPAT
static long vhba_ctl_compat_ioctl(struct file *file, unsigned int cmd,
				  unsigned long arg)
{
	return vhba_ctl_ioctl(file, cmd, (unsigned long)compat_ptr(arg));
}
#endif

/*
 * Work item on vhba_host_wq: adds the host's SCSI device, unless the fd
 * was closed first.  Scanning sends INQUIRY and the upper drivers' probe
 * commands through the fd and waits for the answers, under this host's
 * scan lock alone.
 */
static void vhba_add_work(struct work_struct *work)
{
	struct vhba_host *vhost = container_of(work, struct vhba_host,
					       add_work);
	unsigned long flags;
	bool open;
	int ret;

	spin_lock_irqsave(&vhost->lock, flags);
	open = !!vhost->vdev;
	spin_unlock_irqrestore(&vhost->lock, flags);
	if (!open)
		return;
	ret = scsi_add_device(vhost->shost, 0, 0, 0);
	if (ret)
		shost_printk(KERN_INFO, vhost->shost,
			     "adding its device failed: %d\n", ret);
}

/*
 * Work item on vhba_host_wq, queued once by close: removes the host.  A
 * scan still running ends at once (its commands fail from close on), so
 * the wait for it is short.  Drops the host's own reference.
 */
static void vhba_remove_work(struct work_struct *work)
{
	struct vhba_host *vhost = container_of(work, struct vhba_host,
					       remove_work);

	cancel_work_sync(&vhost->add_work);
	scsi_remove_host(vhost->shost);
	/*
	 * Only now: device_del() releases what a device without a driver
	 * holds; what is added after it goes with the device's release.
	 */
	devres_add(&vhost->shost->shost_gendev, vhost->num_res);
	vhba_host_put(vhost);
}

/*
 * Release action of a removed host's device: the host is about to be
 * freed, so its device number @res is free again.  Runs in
 * device_release(), from whichever put was the last.
 */
static void vhba_host_gone(struct device *dev, void *res)
{
	vhba_ida_free(&vhba_devnums, *(unsigned int *)res);
}

/*
 * A new SCSI host for @vdev, with the lowest free device number, its slots
 * free and no SCSI device on it yet.  Process context.
 */
static struct vhba_host *vhba_host_new(struct device *parent,
				       struct vhba_device *vdev)
{
	unsigned int nr_slots, max_sectors, i;
	struct Scsi_Host *shost;
	struct vhba_host *vhost;
	unsigned int *num_res;
	int num, ret;

	nr_slots = clamp(vhba_can_queue, 1, VHBA_CAN_QUEUE_MAX);
	max_sectors = clamp(vhba_max_sectors, VHBA_MAX_SECTORS_DEF,
			    VHBA_MAX_SECTORS_MAX);

	num = vhba_ida_alloc(&vhba_devnums, VHBA_MAX_DEVICES - 1);
	if (num < 0)
		return ERR_PTR(num == -ENOSPC ? -EBUSY : num);
	ret = -ENOMEM;
	num_res = devres_alloc(vhba_host_gone, sizeof(*num_res), GFP_KERNEL);
	if (!num_res)
		goto err_free_num;
	*num_res = num;
	shost = scsi_host_alloc(&vhba_template, sizeof(*vhost) +
				nr_slots * sizeof(vhost->slots[0]));
	if (!shost)
		goto err_free_res;
	vhost = shost_priv(shost);
	vhost->num_res = num_res;

	shost->max_channel = 0;
	shost->max_id = 1;
	shost->max_lun = 1;
	shost->max_cmd_len = VHBA_MAX_CDB;
	shost->can_queue = nr_slots;
	shost->cmd_per_lun = nr_slots;
	shost->max_sectors = max_sectors;
	/* one page per segment, plus one for a buffer not page aligned */
	shost->sg_tablesize = max_t(unsigned int, VHBA_SG_TABLESIZE,
				    max_sectors * 512 / PAGE_SIZE + 1);
	vhba_host_set_max_segment_size(shost, PAGE_SIZE);

	vhost->shost = shost;
	spin_lock_init(&vhost->lock);
	INIT_LIST_HEAD(&vhost->free_slots);
	kref_init(&vhost->ref);
	INIT_WORK(&vhost->add_work, vhba_add_work);
	INIT_WORK(&vhost->remove_work, vhba_remove_work);
	init_waitqueue_head(&vhost->slot_wait);
	vhost->vdev = vdev;
	vdev->vhost = vhost;
	vhost->nr_slots = nr_slots;
	vhost->direct_max = nr_slots / 2;
	for (i = 0; i < nr_slots; i++) {
		vhost->slots[i].tag = i;
		vhost->slots[i].vhost = vhost;
		INIT_WORK(&vhost->slots[i].direct_work, vhba_direct_work);
		list_add_tail(&vhost->slots[i].node, &vhost->free_slots);
	}

	ret = scsi_add_host(shost, parent);
	if (ret)
		goto err_put_host;
	return vhost;

err_put_host:
	scsi_host_put(shost);
err_free_res:
	devres_free(num_res);
err_free_num:
	vhba_ida_free(&vhba_devnums, num);
	return ERR_PTR(ret);
}

/*
 * open(): create a host with a device number and schedule its SCSI device.
 * Process context.  Returns before the device exists.
 */
static int vhba_ctl_open(struct inode *inode, struct file *file)
{
	struct vhba_device *vdev;
	struct vhba_host *vhost;
	struct device *parent;

	/* pairs with the release in vhba_probe(): the parent is set up */
	parent = smp_load_acquire(&vhba_parent);
	if (!parent)
		return -ENODEV;

	vdev = kzalloc(sizeof(*vdev), GFP_KERNEL);
	if (!vdev)
		return -ENOMEM;
	INIT_LIST_HEAD(&vdev->pending);
	INIT_LIST_HEAD(&vdev->active);
	init_waitqueue_head(&vdev->read_wait);

	vhost = vhba_host_new(parent, vdev);
	if (IS_ERR(vhost)) {
		kfree(vdev);
		return PTR_ERR(vhost);
	}

	file->private_data = vdev;
	queue_work(vhba_host_wq, &vhost->add_work);
	return 0;
}

/*
 * release(): the responder is gone.  Process context; no read(), write()
 * or ioctl() on this fd can be running.  Every command left fails with
 * DID_NO_CONNECT at once, direct reads in flight included (their work
 * items throw the data away); only one storing data is waited for.  The
 * host is removed asynchronously; its number is freed with it.
 */
static int vhba_ctl_release(struct inode *inode, struct file *file)
{
	struct vhba_device *vdev = file->private_data;
	struct vhba_host *vhost = vdev->vhost;
	struct vhba_backing *backing;
	struct vhba_slot *slot, *next;
	unsigned long flags;
	LIST_HEAD(done);

	spin_lock_irqsave(&vhost->lock, flags);
	vhost->vdev = NULL;	/* no new commands from here on */
	backing = vdev->backing;
	vdev->backing = NULL;
	list_splice_tail_init(&vdev->active, &vdev->pending);
	while ((slot = list_first_entry_or_null(&vdev->pending,
						struct vhba_slot, node))) {
		if (slot->state == VHBA_SLOT_FILLING) {
			vhba_slot_wait(vhost, slot, &flags);
			continue;
		}
		WARN_ON_ONCE(slot->state == VHBA_SLOT_READING ||
			     slot->state == VHBA_SLOT_WRITING);
		slot->vdev = NULL;
		slot->state = VHBA_SLOT_COMPLETING;
		list_move_tail(&slot->node, &done);
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	list_for_each_entry_safe(slot, next, &done, node) {
		list_del_init(&slot->node);
		vhba_slot_complete(vhost, slot, DID_NO_CONNECT << 16,
				   scsi_bufflen(slot->cmd));
	}
	vhba_backing_put(backing);

	queue_work(vhba_host_wq, &vhost->remove_work);
#ifdef VHBA_INJECT_LEAK
	/* test only (make INJECT=leak): a debug kernel's kmemleak must report vdev */
#else
	kfree(vdev);
#endif
#ifdef VHBA_INJECT_UAF
	/* test only (make INJECT=uaf): a debug kernel must report this read */
	pr_info("closed device, backing %p\n", READ_ONCE(vdev->backing));
#endif
	return 0;
}

static const struct file_operations vhba_ctl_fops = {
	.owner		= THIS_MODULE,
	.open		= vhba_ctl_open,
	.release	= vhba_ctl_release,
	.read		= vhba_ctl_read,
	.write		= vhba_ctl_write,
	.poll		= vhba_ctl_poll,
	.unlocked_ioctl	= vhba_ctl_ioctl,
#ifdef CONFIG_COMPAT
	.compat_ioctl	= vhba_ctl_compat_ioctl,
#endif
	.llseek		= noop_llseek,
};

static struct miscdevice vhba_miscdev = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "vhba_ctl",
	.fops	= &vhba_ctl_fops,
};

/*
 * Platform probe: process context.  The platform device is only the
 * parent of the hosts, which open() creates; they are given no DMA, but a
 * 32-bit default mask would let the midlayer cap max_sectors at the
 * swiotlb mapping size.
 */
static int vhba_probe(struct platform_device *pdev)
{
	if (dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64)))
		dev_dbg(&pdev->dev, "no 64-bit DMA mask\n");
	/* publish only a set-up parent; pairs with vhba_ctl_open() */
	smp_store_release(&vhba_parent, &pdev->dev);
	dev_info(&pdev->dev, "a host per open, can_queue %u, max_sectors %u\n",
		 clamp(vhba_can_queue, 1, VHBA_CAN_QUEUE_MAX),
		 clamp(vhba_max_sectors, VHBA_MAX_SECTORS_DEF,
		       VHBA_MAX_SECTORS_MAX));
	return 0;
}

/*
 * Platform remove: process context, only at module unload (manual unbind
 * is suppressed), once every host has been removed (some may still be
 * held, and freed later).  The mirror of vhba_probe().
 */
static void vhba_remove(struct platform_device *pdev)
{
	/* pairs with vhba_ctl_open(); none can run now, misc is gone */
	smp_store_release(&vhba_parent, NULL);
}

static struct platform_driver vhba_platform_driver = {
	.driver = {
		.name			= VHBA_NAME,
		.suppress_bind_attrs	= true,
	},
	.probe	= vhba_probe,
	.remove	= vhba_platform_remove,
};

static int __init vhba_init(void)
{
	int ret;

	BUILD_BUG_ON(sizeof(struct vhba_request) != 32);
	BUILD_BUG_ON(sizeof(struct vhba_response) != 12);
	BUILD_BUG_ON(sizeof(struct vhba_direct_read) != 24);
	BUILD_BUG_ON((VHBA_CAN_QUEUE_MAX - 1) & ~VHBA_TAG_SLOT_MASK);

	vhba_direct_wq = alloc_workqueue("vhba_direct", WQ_HIGHPRI |
					 WQ_MEM_RECLAIM | VHBA_WQ_PERCPU, 0);
	if (!vhba_direct_wq)
		return -ENOMEM;

	vhba_pdev = platform_device_register_simple(VHBA_NAME,
						    PLATFORM_DEVID_NONE,
						    NULL, 0);
	if (IS_ERR(vhba_pdev)) {
		ret = PTR_ERR(vhba_pdev);
		goto err_destroy_direct_wq;
	}

	ret = platform_driver_register(&vhba_platform_driver);
	if (ret)
		goto err_unregister_device;

	/* a scan waits for its responder: not one worker for all hosts */
	vhba_host_wq = alloc_workqueue("vhba_host", VHBA_WQ_PERCPU, 0);
	if (!vhba_host_wq) {
		ret = -ENOMEM;
		goto err_unregister_driver;
	}

	ret = misc_register(&vhba_miscdev);
	if (ret)
		goto err_destroy_host_wq;

	return 0;

err_destroy_host_wq:
	destroy_workqueue(vhba_host_wq);
err_unregister_driver:
	platform_driver_unregister(&vhba_platform_driver);
err_unregister_device:
	platform_device_unregister(vhba_pdev);
err_destroy_direct_wq:
	destroy_workqueue(vhba_direct_wq);
	return ret;
}

/*
 * No fd is open and no direct read runs (each holds a module reference),
 * but the last hosts may still be being removed: draining their workqueue
 * ends that before their parent goes.
 */
static void __exit vhba_exit(void)
{
	misc_deregister(&vhba_miscdev);
	destroy_workqueue(vhba_host_wq);
	platform_driver_unregister(&vhba_platform_driver);
	platform_device_unregister(vhba_pdev);
	destroy_workqueue(vhba_direct_wq);
}

module_init(vhba_init);
module_exit(vhba_exit);

MODULE_AUTHOR("vhba-lab project");
MODULE_DESCRIPTION("Virtual SCSI HBA served from userspace (CDEmu compatible)");
MODULE_LICENSE("GPL");
MODULE_VERSION(VHBA_VERSION);
