# Node pools. The manifests in deploy/k8s select them by these labels and tolerate these taints:
#   cpu          chorus/pool=realtime                                   (system add-ons, Piper, the Ray head)
#   gpu-realtime chorus/pool=realtime, chorus/accelerator=nvidia; taint nvidia.com/gpu=present:NoSchedule
#   gpu-batch    chorus/pool=batch, chorus/accelerator=nvidia; taints nvidia.com/gpu, chorus/spot=true (NoSchedule)
data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.key}"
}

locals {
  gpu_taint = { key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }
  node_groups = {
    cpu = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = var.cpu_instance_types
      capacity_type  = "ON_DEMAND"
      scaling        = var.cpu_scaling
      disk_size      = 50
      labels         = { "chorus/pool" = "realtime" }
      taints         = []
    }
    gpu-realtime = {
      ami_type       = "AL2023_x86_64_NVIDIA"
      instance_types = var.gpu_instance_types
      capacity_type  = var.gpu_capacity_type
      scaling        = var.gpu_scaling
      disk_size      = var.gpu_disk_size_gb
      labels         = { "chorus/pool" = "realtime", "chorus/accelerator" = "nvidia" }
      taints         = [local.gpu_taint]
    }
    gpu-batch = {
      ami_type       = "AL2023_x86_64_NVIDIA"
      instance_types = var.gpu_instance_types
      capacity_type  = var.batch_gpu_capacity_type
      scaling        = var.batch_gpu_scaling
      disk_size      = var.gpu_disk_size_gb
      labels         = { "chorus/pool" = "batch", "chorus/accelerator" = "nvidia" }
      taints         = [local.gpu_taint, { key = "chorus/spot", value = "true", effect = "NO_SCHEDULE" }]
    }
  }
}

resource "aws_eks_node_group" "chorus" {
  for_each = local.node_groups

  cluster_name    = aws_eks_cluster.chorus.name
  node_group_name = "${var.name}-${each.key}"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.private_subnet_ids
  ami_type        = each.value.ami_type
  instance_types  = each.value.instance_types
  capacity_type   = each.value.capacity_type
  disk_size       = each.value.disk_size
  labels          = each.value.labels

  scaling_config {
    min_size     = each.value.scaling.min
    desired_size = each.value.scaling.desired
    max_size     = each.value.scaling.max
  }

  update_config {
    max_unavailable = 1
  }

  dynamic "taint" {
    for_each = each.value.taints

    content {
      key    = taint.value.key
      value  = taint.value.value
      effect = taint.value.effect
    }
  }

  # The cluster autoscaler (or Karpenter) owns desired_size once the group exists.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}
