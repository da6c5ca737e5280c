// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vhba - virtual SCSI host bus adapter served from userspace
 *
 * Each open() of /dev/vhba_ctl creates one SCSI device (LUN 0) on the
 * single vhba host.  Commands the midlayer queues to that device are
 * handed to the process holding the file descriptor through read(); the
 * process answers each one with write().  The record layouts and ioctl
 * numbers are fixed by existing userspace (cdemu-daemon).
 *
 * Direct reads (an extension cdemu-daemon never asks for): a responder may
 * hand the module its image file with VHBA_CTL_SET_DIRECT_READ.  From then
 * on plain READ(10)/READ(12) commands inside the image are served by a
 * work item reading that file, without a round trip through userspace;
 * every other command, and any read the work item cannot complete, still
 * goes to the responder.  Turning it off waits for reads in flight, so the
 * responder can change the medium knowing no old data goes out afterwards.
 *
 * Locking: one spinlock per host, vhba_host.lock, protects the device
 * table, the add/remove bitmaps, every command slot and the per-device
 * slot lists.  It is always taken with interrupts disabled and never held
 * across a user copy, a sleep or a call into the midlayer.  A slot being
 * copied to or from userspace, read from the image or completed is owned
 * by the thread or work item that moved it into that state (READING,
 * WRITING, DIRECT, COMPLETING); the abort handler waits for such a slot
 * instead of touching it, and so do release() and direct read changes for
 * DIRECT ones.
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
#include <scsi/scsi.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>

#include "vhba_compat.h"

#ifndef VHBA_VERSION
#error "VHBA_VERSION is not defined: build through module/Makefile"
#endif

#define VHBA_NAME		"vhba"

/* 16 buses of 15 targets; target 15 of each bus is left unused */
#define VHBA_MAX_BUS		16
#define VHBA_MAX_ID		16
#define VHBA_IDS_PER_BUS	15
#define VHBA_MAX_DEVICES	(VHBA_MAX_BUS * VHBA_IDS_PER_BUS)
#define VHBA_MAX_CDB		16

#define VHBA_CAN_QUEUE_DEF	32
#define VHBA_CAN_QUEUE_MAX	256
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
	VHBA_SLOT_ANSWERED,	/* answered while being aborted */
	VHBA_SLOT_COMPLETING,	/* being handed back to the midlayer */
	VHBA_SLOT_DIRECT,	/* being read from the image by its work */
};

/* An image file direct reads are served from; fixed once published. */
struct vhba_backing {
	struct file *file;
	u64 offset;
	u64 blocks;
	unsigned int block_shift;
};

struct vhba_device;

/*
 * One command in flight.  All fields are protected by vhba_host.lock.
 * @node is on exactly one list: vhba_host.free_slots (FREE),
 * vhba_device.pending (PENDING), vhba_device.active (READING, SENT,
 * WRITING, ANSWERED, DIRECT), a private list of the completing thread, or
 * none.  @backing and @pos are set while the slot is DIRECT.
 */
struct vhba_slot {
	struct list_head node;
	struct scsi_cmnd *cmd;
	struct vhba_device *vdev;	/* NULL once the fd is closed */
	u32 tag;
	enum vhba_slot_state state;
	bool aborting;			/* an abort handler waits on it */
	struct vhba_backing *backing;
	loff_t pos;			/* file offset of the first block */
	struct work_struct direct_work;	/* runs vhba_direct_work() */
};

/*
 * One open control fd, i.e. one SCSI device.  @vhost and @num never change;
 * the lists are protected by vhba_host.lock.
 */
struct vhba_device {
	struct vhba_host *vhost;
	unsigned int num;		/* channel * 15 + id */
	struct list_head pending;	/* PENDING slots, oldest first */
	struct list_head active;	/* slots userspace is working on */
	wait_queue_head_t read_wait;	/* woken on new PENDING slots */
	struct vhba_backing *backing;	/* direct reads, or NULL */
};

/* Host state, in the Scsi_Host private area. */
struct vhba_host {
	struct Scsi_Host *shost;
	spinlock_t lock;		/* see the top of this file */
	/* protected by @lock */
	struct vhba_device *devs[VHBA_MAX_DEVICES];
	DECLARE_BITMAP(add_map, VHBA_MAX_DEVICES);
	DECLARE_BITMAP(remove_map, VHBA_MAX_DEVICES);
	struct list_head free_slots;	/* least recently used first */
	struct vhba_slot *slots;	/* array of @nr_slots, fixed */
	/* constant after probe */
	unsigned int nr_slots;
	struct work_struct sync_work;	/* adds and removes SCSI devices */
	wait_queue_head_t slot_wait;	/* woken when a slot leaves a busy state */
};

/* Published by probe once the host is up, cleared by remove. */
static struct vhba_host *vhba_host_ptr;
static struct platform_device *vhba_pdev;
/* Runs direct reads; high priority, as a waiting reader is their only user. */
static struct workqueue_struct *vhba_direct_wq;

static int vhba_can_queue = VHBA_CAN_QUEUE_DEF;
module_param_named(can_queue, vhba_can_queue, int, 0);
MODULE_PARM_DESC(can_queue,
		 "Commands in flight per host and device, 1-256 (default 32)");

static int vhba_max_sectors = VHBA_MAX_SECTORS_DEF;
module_param_named(max_sectors, vhba_max_sectors, int, 0444);
MODULE_PARM_DESC(max_sectors,
		 "Largest command in 512-byte sectors, 256-8192 (default 256 = 128 KiB); larger values need a responder whose read() buffer holds 32 + max_sectors * 512 bytes, which cdemu-daemon does not have");

static bool vhba_direct_reads = true;
module_param_named(direct_reads, vhba_direct_reads, bool, 0644);
MODULE_PARM_DESC(direct_reads,
		 "Let responders have READ commands served from their image file in the kernel (default Y); N refuses new requests");

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

/* Device number of @sdev's address, or -1 if vhba never creates it. */
static int vhba_sdev_devnum(struct scsi_device *sdev)
{
	if (sdev->lun != 0 || sdev->channel >= VHBA_MAX_BUS ||
	    sdev->id >= VHBA_IDS_PER_BUS)
		return -1;
	return sdev->channel * VHBA_IDS_PER_BUS + sdev->id;
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
	slot->aborting = false;
	return slot;
}

/*
 * Return @slot to the free list and wake an abort handler waiting for it.
 * Called with vhost->lock held.
 */
static void vhba_slot_put(struct vhba_host *vhost, struct vhba_slot *slot)
{
	if (slot->aborting)
		wake_up_all(&vhost->slot_wait);
	list_move_tail(&slot->node, &vhost->free_slots);
	slot->cmd = NULL;
	slot->vdev = NULL;
	slot->state = VHBA_SLOT_FREE;
	slot->aborting = false;
}

/* Slot currently carrying @tag, or NULL.  Called with vhost->lock held. */
static struct vhba_slot *vhba_slot_by_tag(struct vhba_host *vhost, u32 tag)
{
	u32 idx = tag & VHBA_TAG_SLOT_MASK;
	struct vhba_slot *slot;

	if (idx >= vhost->nr_slots)
		return NULL;
	slot = &vhost->slots[idx];
	if (slot->state == VHBA_SLOT_FREE || slot->tag != tag)
		return NULL;
	return slot;
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

		if (slot->state == VHBA_SLOT_FREE || slot->cmd != cmd)
			continue;
		if (slot->state != VHBA_SLOT_COMPLETING)
			return slot;
		found = slot;
	}
	return found;
}

/* Wait condition of the abort handler.  Takes vhost->lock. */
static bool vhba_slot_moved(struct vhba_host *vhost, struct vhba_slot *slot,
			    u32 tag, enum vhba_slot_state state)
{
	unsigned long flags;
	bool moved;

	spin_lock_irqsave(&vhost->lock, flags);
	moved = slot->tag != tag || slot->state != state;
	spin_unlock_irqrestore(&vhost->lock, flags);
	return moved;
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
 * process context without vhost->lock; the caller owns the slot
 * (COMPLETING) and has already unlinked it from its device.
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

/*
 * Fill @cmd's data buffer from @file at @pos.  Process context, may sleep
 * (sg_miter without SG_MITER_ATOMIC maps pages sleepably).  Returns false
 * on an I/O error or a file that ends early.
 */
static bool vhba_direct_copy(struct file *file, struct scsi_cmnd *cmd,
			     loff_t pos)
{
	struct sg_mapping_iter miter;
	bool ok = true;

	sg_miter_start(&miter, scsi_sglist(cmd), scsi_sg_count(cmd),
		       SG_MITER_TO_SG);
	while (ok && sg_miter_next(&miter)) {
		char *addr = miter.addr;
		size_t done = 0;

		while (done < miter.length) {
			ssize_t n = vhba_file_read(file, addr + done,
						   miter.length - done, &pos);

			if (n <= 0) {
				ok = false;
				break;
			}
			done += n;
		}
	}
	sg_miter_stop(&miter);
	return ok;
}

/*
 * Work item of a DIRECT slot: read the blocks and complete the command.
 * Process context.  A read that fails is queued for the responder instead,
 * which answers it from its own view of the medium.
 */
static void vhba_direct_work(struct work_struct *work)
{
	struct vhba_slot *slot = container_of(work, struct vhba_slot,
					      direct_work);
	struct vhba_device *vdev = slot->vdev;	/* release() waits for us */
	struct vhba_host *vhost = vdev->vhost;
	unsigned long flags;
	bool ok;

	ok = vhba_direct_copy(slot->backing->file, slot->cmd, slot->pos);

	spin_lock_irqsave(&vhost->lock, flags);
	slot->backing = NULL;
	/* abort handlers, release() and direct-read changes wait for this */
	wake_up_all(&vhost->slot_wait);
	if (!ok) {
		slot->state = VHBA_SLOT_PENDING;
		list_move(&slot->node, &vdev->pending);
		wake_up_interruptible(&vdev->read_wait);
		spin_unlock_irqrestore(&vhost->lock, flags);
		return;
	}
	if (slot->aborting) {
		/* the abort handler owns the command now */
		slot->state = VHBA_SLOT_ANSWERED;
		spin_unlock_irqrestore(&vhost->lock, flags);
		return;
	}
	slot->state = VHBA_SLOT_COMPLETING;
	list_del_init(&slot->node);
	spin_unlock_irqrestore(&vhost->lock, flags);

	vhba_slot_complete(vhost, slot, SAM_STAT_GOOD, 0);
}

/*
 * Whether @vdev has a direct read in flight from @backing, or from any
 * backing if @backing is NULL.  Takes vhost->lock.
 */
static bool vhba_dev_reading_direct(struct vhba_device *vdev,
				    const struct vhba_backing *backing)
{
	struct vhba_slot *slot;
	unsigned long flags;
	bool busy = false;

	spin_lock_irqsave(&vdev->vhost->lock, flags);
	list_for_each_entry(slot, &vdev->active, node) {
		if (slot->state == VHBA_SLOT_DIRECT &&
		    (!backing || slot->backing == backing)) {
			busy = true;
			break;
		}
	}
	spin_unlock_irqrestore(&vdev->vhost->lock, flags);
	return busy;
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
	int num = vhba_sdev_devnum(cmd->device);

	spin_lock_irqsave(&vhost->lock, flags);
	if (num >= 0)
		vdev = vhost->devs[num];
	if (vdev) {
		slot = vhba_slot_get(vhost, vdev, cmd);
		if (!slot) {
			spin_unlock_irqrestore(&vhost->lock, flags);
			return SCSI_MLQUEUE_HOST_BUSY;
		}
		if (vdev->backing &&
		    vhba_direct_match(vdev->backing, cmd, &slot->pos)) {
			slot->state = VHBA_SLOT_DIRECT;
			slot->backing = vdev->backing;
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
 * ->eh_abort_handler.  Called from the SCSI error handler or the abort
 * work item (process context, may sleep) for a command that timed out.
 *
 * Not handed out yet: dropped, SUCCESS.  Answered already: SUCCESS.
 * With userspace: forgotten (a late answer gets -EIO), FAILED, so the
 * midlayer escalates and offlines the device as with upstream vhba.
 * Being copied, read from the image or completed: wait for the owner,
 * then decide.
 */
static int vhba_abort(struct scsi_cmnd *cmd)
{
	struct vhba_host *vhost = shost_priv(cmd->device->host);
	struct vhba_slot *slot;
	enum vhba_slot_state state;
	unsigned long flags;
	u32 tag = 0;
	int ret;

	spin_lock_irqsave(&vhost->lock, flags);
	for (;;) {
		slot = vhba_slot_by_cmd(vhost, cmd);
		if (!slot) {
			ret = SUCCESS;
			break;
		}
		state = slot->state;
		if (state == VHBA_SLOT_PENDING || state == VHBA_SLOT_ANSWERED) {
			vhba_slot_put(vhost, slot);
			ret = SUCCESS;
			break;
		}
		if (state == VHBA_SLOT_SENT) {
			tag = slot->tag;
			vhba_slot_put(vhost, slot);
			ret = FAILED;
			break;
		}
		/* READING, WRITING, DIRECT, COMPLETING: another thread owns it */
		slot->aborting = true;
		tag = slot->tag;
		spin_unlock_irqrestore(&vhost->lock, flags);
		wait_event(vhost->slot_wait,
			   vhba_slot_moved(vhost, slot, tag, state));
		spin_lock_irqsave(&vhost->lock, flags);
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (ret == FAILED)
		scmd_printk(KERN_WARNING, cmd,
			    "abort: responder did not answer tag %#x\n", tag);
	return ret;
}

static struct scsi_host_template vhba_template = {
	.module			= THIS_MODULE,
	.name			= VHBA_NAME,
	.proc_name		= VHBA_NAME,
	.queuecommand		= vhba_queuecommand,
	.eh_abort_handler	= vhba_abort,
	.can_queue		= VHBA_CAN_QUEUE_DEF,
	.cmd_per_lun		= VHBA_CAN_QUEUE_DEF,
	.this_id		= -1,
	.sg_tablesize		= VHBA_SG_TABLESIZE,
	.max_sectors		= VHBA_MAX_SECTORS_DEF,
};

/*
 * Copy the first @len data-out bytes of @cmd to @ubuf, page by page,
 * straight from the scatterlist.  Process context, may fault; the caller
 * owns the slot (READING).  A scatterlist shorter than @len is padded with
 * zeroes.  Returns 0 or -EFAULT.
 */
static int vhba_copy_sg_to_user(struct scsi_cmnd *cmd, char __user *ubuf,
				unsigned int len)
{
	struct sg_mapping_iter miter;
	unsigned int done = 0;
	int ret = 0;

	sg_miter_start(&miter, scsi_sglist(cmd), scsi_sg_count(cmd),
		       SG_MITER_FROM_SG);
	while (done < len && sg_miter_next(&miter)) {
		size_t n = min_t(size_t, miter.length, len - done);

		if (copy_to_user(ubuf + done, miter.addr, n)) {
			ret = -EFAULT;
			break;
		}
		miter.consumed = n;
		done += n;
	}
	sg_miter_stop(&miter);

	if (!ret && done < len && clear_user(ubuf + done, len - done))
		ret = -EFAULT;
	return ret;
}

/*
 * Copy up to *@len data-in bytes from @ubuf into @cmd's scatterlist; on
 * return *@len is the number of bytes stored.  Process context, may
 * fault; the caller owns the slot (WRITING).  Returns 0 or -EFAULT.
 */
static int vhba_copy_user_to_sg(struct scsi_cmnd *cmd, const char __user *ubuf,
				unsigned int *len)
{
	struct sg_mapping_iter miter;
	unsigned int done = 0;
	int ret = 0;

	sg_miter_start(&miter, scsi_sglist(cmd), scsi_sg_count(cmd),
		       SG_MITER_TO_SG);
	while (done < *len && sg_miter_next(&miter)) {
		size_t n = min_t(size_t, miter.length, *len - done);

		if (copy_from_user(miter.addr, ubuf + done, n)) {
			ret = -EFAULT;
			break;
		}
		miter.consumed = n;
		done += n;
	}
	sg_miter_stop(&miter);

	*len = done;
	return ret;
}

/*
 * Copy @len (at most SCSI_SENSE_BUFFERSIZE) sense bytes from @ubuf into
 * @cmd.  Process context; the caller owns the slot (WRITING).  Nothing is
 * changed on -EFAULT.
 */
static int vhba_copy_sense(struct scsi_cmnd *cmd, const char __user *ubuf,
			   unsigned int len)
{
	u8 sense[SCSI_SENSE_BUFFERSIZE];

	if (copy_from_user(sense, ubuf, len))
		return -EFAULT;
	memcpy(cmd->sense_buffer, sense, len);
	memset(cmd->sense_buffer + len, 0, SCSI_SENSE_BUFFERSIZE - len);
	return 0;
}

/*
 * read(): pass the oldest pending command to userspace as one record.
 * Process context; sleeps (interruptibly) unless O_NONBLOCK.
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
	int ret;

	spin_lock_irqsave(&vhost->lock, flags);
	while (list_empty(&vdev->pending)) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(vdev->read_wait,
					       vhba_dev_has_pending(vdev));
		if (ret)
			return ret;
		spin_lock_irqsave(&vhost->lock, flags);
	}

	slot = list_first_entry(&vdev->pending, struct vhba_slot, node);
	cmd = slot->cmd;
	payload = vhba_cmd_is_data_out(cmd) ? scsi_bufflen(cmd) : 0;
	if (count < sizeof(req) + payload) {
		/* stays pending: a read with a bigger buffer gets it */
		spin_unlock_irqrestore(&vhost->lock, flags);
		return -EIO;
	}

	memset(&req, 0, sizeof(req));
	req.metatag = slot->tag;
	req.lun = (u32)cmd->device->lun;
	req.cdb_len = min_t(unsigned int, cmd->cmd_len, VHBA_MAX_CDB);
	memcpy(req.cdb, cmd->cmnd, req.cdb_len);
	req.data_len = scsi_bufflen(cmd);

	slot->state = VHBA_SLOT_READING;
	list_move_tail(&slot->node, &vdev->active);
	spin_unlock_irqrestore(&vhost->lock, flags);

	ret = 0;
	if (copy_to_user(buf, &req, sizeof(req)))
		ret = -EFAULT;
	else if (payload)
		ret = vhba_copy_sg_to_user(cmd, buf + sizeof(req), payload);

	spin_lock_irqsave(&vhost->lock, flags);
	if (ret) {
		/* back to the head of the queue, offered again */
		slot->state = VHBA_SLOT_PENDING;
		list_move(&slot->node, &vdev->pending);
		wake_up_interruptible(&vdev->read_wait);
	} else {
		slot->state = VHBA_SLOT_SENT;
	}
	if (slot->aborting)
		wake_up_all(&vhost->slot_wait);
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (ret)
		return ret;
	*ppos += sizeof(req) + payload;
	return sizeof(req) + payload;
}

/*
 * write(): the answer to one command previously read from this fd.
 * Process context.  Bytes beyond what the answer needs are ignored.
 */
static ssize_t vhba_ctl_write(struct file *file, const char __user *buf,
			      size_t count, loff_t *ppos)
{
	struct vhba_device *vdev = file->private_data;
	struct vhba_host *vhost = vdev->vhost;
	const char __user *body = buf + sizeof(struct vhba_response);
	struct vhba_response resp;
	struct vhba_slot *slot;
	struct scsi_cmnd *cmd;
	unsigned int len, bufflen, resid = 0;
	unsigned long flags;
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
	cmd = slot->cmd;
	spin_unlock_irqrestore(&vhost->lock, flags);

	bufflen = scsi_bufflen(cmd);
	if (resp.status) {
		/* error: sense only, no data-in */
		len = min_t(size_t, resp.data_len, SCSI_SENSE_BUFFERSIZE);
		len = min_t(size_t, len, avail);
		ret = vhba_copy_sense(cmd, body, len);
		if (vhba_cmd_is_data_in(cmd))
			resid = bufflen;
	} else if (vhba_cmd_is_data_in(cmd) && bufflen) {
		len = min_t(size_t, resp.data_len, bufflen);
		len = min_t(size_t, len, avail);
		ret = vhba_copy_user_to_sg(cmd, body, &len);
		resid = bufflen - len;
	} else {
		len = 0;
	}

	spin_lock_irqsave(&vhost->lock, flags);
	if (ret) {
		/* may be retried */
		slot->state = VHBA_SLOT_SENT;
		if (slot->aborting)
			wake_up_all(&vhost->slot_wait);
		spin_unlock_irqrestore(&vhost->lock, flags);
		return ret;
	}
	if (slot->aborting) {
		/* the abort handler owns the command now */
		slot->state = VHBA_SLOT_ANSWERED;
		wake_up_all(&vhost->slot_wait);
		spin_unlock_irqrestore(&vhost->lock, flags);
		return sizeof(resp) + len;
	}
	slot->state = VHBA_SLOT_COMPLETING;
	list_del_init(&slot->node);
	spin_unlock_irqrestore(&vhost->lock, flags);

	vhba_slot_complete(vhost, slot, resp.status, resid);
	return sizeof(resp) + len;
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
	unsigned int addr[4] = {
		vdev->vhost->shost->host_no,
		vdev->num / VHBA_IDS_PER_BUS,
		vdev->num % VHBA_IDS_PER_BUS,
		0,
	};

	return copy_to_user(uaddr, addr, sizeof(addr)) ? -EFAULT : 0;
}

static void vhba_backing_put(struct vhba_backing *backing)
{
	if (!backing)
		return;
	fput(backing->file);
	kfree(backing);
}

/*
 * A backing for @arg: a regular file or block device open for reading, and
 * an image that fits in loff_t.  Process context.
 */
static struct vhba_backing *vhba_backing_new(const struct vhba_direct_read *arg)
{
	struct vhba_backing *backing;
	struct file *file;
	unsigned int shift;
	umode_t mode;
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
	mode = file_inode(file)->i_mode;
	ret = -EBADF;
	if (!(file->f_mode & FMODE_READ))
		goto err_put_file;
	/* not a pipe, socket or vhba_ctl itself: reads must not wait on us */
	ret = -EINVAL;
	if (!S_ISREG(mode) && !S_ISBLK(mode))
		goto err_put_file;
	ret = -ENOMEM;
	backing = kzalloc(sizeof(*backing), GFP_KERNEL);
	if (!backing)
		goto err_put_file;
	backing->file = file;
	backing->offset = arg->offset;
	backing->blocks = arg->blocks;
	backing->block_shift = shift;
	return backing;

err_put_file:
	fput(file);
	return ERR_PTR(ret);
}

/*
 * VHBA_CTL_SET_DIRECT_READ: serve reads from a new backing (fd >= 0) or
 * from none (fd < 0).  Returns once no read from the old backing is in
 * flight.  Process context.
 */
static long vhba_ctl_set_direct_read(struct vhba_device *vdev,
				     const void __user *uarg)
{
	struct vhba_host *vhost = vdev->vhost;
	struct vhba_backing *backing = NULL, *old;
	struct vhba_direct_read arg;
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
	spin_unlock_irqrestore(&vhost->lock, flags);

	if (old) {
		wait_event(vhost->slot_wait, !vhba_dev_reading_direct(vdev, old));
		vhba_backing_put(old);
	}
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
		return put_user(vdev->num, uarg);
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
 * open(): claim the lowest free device number and schedule the SCSI device
 * for it.  Process context.  Returns before the device exists.
 */
static int vhba_ctl_open(struct inode *inode, struct file *file)
{
	struct vhba_host *vhost;
	struct vhba_device *vdev;
	unsigned long flags;
	unsigned int num;

	/* pairs with the release in vhba_probe(): the host is fully set up */
	vhost = smp_load_acquire(&vhba_host_ptr);
	if (!vhost)
		return -ENODEV;

	vdev = kzalloc(sizeof(*vdev), GFP_KERNEL);
	if (!vdev)
		return -ENOMEM;
	vdev->vhost = vhost;
	INIT_LIST_HEAD(&vdev->pending);
	INIT_LIST_HEAD(&vdev->active);
	init_waitqueue_head(&vdev->read_wait);

	spin_lock_irqsave(&vhost->lock, flags);
	for (num = 0; num < VHBA_MAX_DEVICES; num++)
		if (!vhost->devs[num])
			break;
	if (num == VHBA_MAX_DEVICES) {
		spin_unlock_irqrestore(&vhost->lock, flags);
		kfree(vdev);
		return -EBUSY;
	}
	vdev->num = num;
	vhost->devs[num] = vdev;
	__set_bit(num, vhost->add_map);
	spin_unlock_irqrestore(&vhost->lock, flags);

	file->private_data = vdev;
	schedule_work(&vhost->sync_work);
	return 0;
}

/*
 * release(): the responder is gone.  Process context; no read(), write()
 * or ioctl() on this fd can be running.  Direct reads in flight finish
 * first; unanswered commands fail with DID_NO_CONNECT, the SCSI device is
 * removed asynchronously.
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
	vhost->devs[vdev->num] = NULL;	/* no new commands from here on */
	__set_bit(vdev->num, vhost->remove_map);
	backing = vdev->backing;
	vdev->backing = NULL;
	spin_unlock_irqrestore(&vhost->lock, flags);

	wait_event(vhost->slot_wait, !vhba_dev_reading_direct(vdev, NULL));
	vhba_backing_put(backing);

	spin_lock_irqsave(&vhost->lock, flags);
	list_splice_tail_init(&vdev->active, &vdev->pending);
	list_for_each_entry_safe(slot, next, &vdev->pending, node) {
		WARN_ON_ONCE(slot->state == VHBA_SLOT_READING ||
			     slot->state == VHBA_SLOT_WRITING ||
			     slot->state == VHBA_SLOT_DIRECT);
		slot->vdev = NULL;
		if (slot->aborting) {
			/* its abort handler finishes it */
			list_del_init(&slot->node);
			continue;
		}
		slot->state = VHBA_SLOT_COMPLETING;
		list_move_tail(&slot->node, &done);
	}
	spin_unlock_irqrestore(&vhost->lock, flags);

	list_for_each_entry_safe(slot, next, &done, node)
		vhba_slot_complete(vhost, slot, DID_NO_CONNECT << 16,
				   scsi_bufflen(slot->cmd));

	schedule_work(&vhost->sync_work);
	kfree(vdev);
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

/* Process context (sync work).  No-op if @num has no SCSI device. */
static void vhba_sdev_remove(struct vhba_host *vhost, unsigned int num)
{
	struct scsi_device *sdev;

	sdev = scsi_device_lookup(vhost->shost, num / VHBA_IDS_PER_BUS,
				  num % VHBA_IDS_PER_BUS, 0);
	if (!sdev)
		return;
	scsi_remove_device(sdev);
	scsi_device_put(sdev);
}

/*
 * Process context (sync work).  Scanning sends INQUIRY and the upper
 * drivers' probe commands through the new fd and waits for the answers.
 */
static void vhba_sdev_add(struct vhba_host *vhost, unsigned int num)
{
	unsigned int channel = num / VHBA_IDS_PER_BUS;
	unsigned int id = num % VHBA_IDS_PER_BUS;
	struct scsi_device *sdev;
	int ret;

	sdev = scsi_device_lookup(vhost->shost, channel, id, 0);
	if (sdev) {
		sdev_printk(KERN_WARNING, sdev, "already present, not added\n");
		scsi_device_put(sdev);
		return;
	}
	ret = scsi_add_device(vhost->shost, channel, id, 0);
	if (ret)
		shost_printk(KERN_INFO, vhost->shost,
			     "adding %u:%u:0 failed: %d\n", channel, id, ret);
}

/*
 * Work item on the system workqueue: brings the SCSI devices in line with
 * the open fds.  For each device number a pending removal (of the device
 * of a closed fd) is done before a pending addition, and an addition is
 * skipped if its fd has been closed meanwhile.
 */
static void vhba_sync_work(struct work_struct *work)
{
	struct vhba_host *vhost = container_of(work, struct vhba_host,
					       sync_work);
	unsigned long flags;
	unsigned int num;
	bool add, remove;

	for (num = 0; num < VHBA_MAX_DEVICES; num++) {
		spin_lock_irqsave(&vhost->lock, flags);
		remove = __test_and_clear_bit(num, vhost->remove_map);
		add = __test_and_clear_bit(num, vhost->add_map) &&
		      vhost->devs[num];
		spin_unlock_irqrestore(&vhost->lock, flags);

		if (remove)
			vhba_sdev_remove(vhost, num);
		if (add)
			vhba_sdev_add(vhost, num);
	}
}

/* Platform probe: creates the SCSI host.  Process context. */
static int vhba_probe(struct platform_device *pdev)
{
	unsigned int nr_slots, max_sectors, i;
	struct Scsi_Host *shost;
	struct vhba_host *vhost;
	int ret;

	nr_slots = clamp(vhba_can_queue, 1, VHBA_CAN_QUEUE_MAX);
	max_sectors = clamp(vhba_max_sectors, VHBA_MAX_SECTORS_DEF,
			    VHBA_MAX_SECTORS_MAX);

	/*
	 * No DMA happens, but a 32-bit default mask would let the midlayer
	 * cap max_sectors at the swiotlb mapping size.
	 */
	if (dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64)))
		dev_dbg(&pdev->dev, "no 64-bit DMA mask\n");

	shost = scsi_host_alloc(&vhba_template, sizeof(*vhost));
	if (!shost)
		return -ENOMEM;

	shost->max_channel = VHBA_MAX_BUS - 1;
	shost->max_id = VHBA_MAX_ID;
	shost->max_lun = 1;
	shost->max_cmd_len = VHBA_MAX_CDB;
	shost->can_queue = nr_slots;
	shost->cmd_per_lun = nr_slots;
	shost->max_sectors = max_sectors;
	/* one page per segment, plus one for a buffer not page aligned */
	shost->sg_tablesize = max_t(unsigned int, VHBA_SG_TABLESIZE,
				    max_sectors * 512 / PAGE_SIZE + 1);
	vhba_host_set_max_segment_size(shost, PAGE_SIZE);

	vhost = shost_priv(shost);
	vhost->shost = shost;
	spin_lock_init(&vhost->lock);
	INIT_LIST_HEAD(&vhost->free_slots);
	INIT_WORK(&vhost->sync_work, vhba_sync_work);
	init_waitqueue_head(&vhost->slot_wait);

	vhost->slots = kcalloc(nr_slots, sizeof(*vhost->slots), GFP_KERNEL);
	if (!vhost->slots) {
		ret = -ENOMEM;
		goto err_put_host;
	}
	vhost->nr_slots = nr_slots;
	for (i = 0; i < nr_slots; i++) {
		vhost->slots[i].tag = i;
		INIT_WORK(&vhost->slots[i].direct_work, vhba_direct_work);
		list_add_tail(&vhost->slots[i].node, &vhost->free_slots);
	}

	ret = scsi_add_host(shost, &pdev->dev);
	if (ret)
		goto err_free_slots;

	platform_set_drvdata(pdev, vhost);
	/* publish only a fully set up host; pairs with vhba_ctl_open() */
	smp_store_release(&vhba_host_ptr, vhost);
	dev_info(&pdev->dev, "host%u: can_queue %u, max_sectors %u\n",
		 shost->host_no, nr_slots, max_sectors);
	return 0;

err_free_slots:
	kfree(vhost->slots);
err_put_host:
	scsi_host_put(shost);
	return ret;
}

/*
 * Platform remove: process context, only at module unload (manual unbind
 * is suppressed), so no control fd is open and no new work gets queued.
 */
static void vhba_remove(struct platform_device *pdev)
{
	struct vhba_host *vhost = platform_get_drvdata(pdev);
	struct Scsi_Host *shost = vhost->shost;

	smp_store_release(&vhba_host_ptr, NULL);
	flush_work(&vhost->sync_work);
	scsi_remove_host(shost);
	kfree(vhost->slots);
	scsi_host_put(shost);
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
		goto err_destroy_wq;
	}

	ret = platform_driver_register(&vhba_platform_driver);
	if (ret)
		goto err_unregister_device;

	ret = misc_register(&vhba_miscdev);
	if (ret)
		goto err_unregister_driver;

	return 0;

err_unregister_driver:
	platform_driver_unregister(&vhba_platform_driver);
err_unregister_device:
	platform_device_unregister(vhba_pdev);
err_destroy_wq:
	destroy_workqueue(vhba_direct_wq);
	return ret;
}

static void __exit vhba_exit(void)
{
	misc_deregister(&vhba_miscdev);
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
