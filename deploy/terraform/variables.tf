variable "name" {
  description = "Prefix of every resource's name (the EKS cluster, the database, the bucket)."
  type        = string
  default     = "chorus"
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "vpc_id" {
  description = "An existing VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two, in different zones) for the nodes and the database."
  type        = list(string)
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (the manifests are validated against 1.34)."
  type        = string
  default     = "1.34"
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the EKS API publicly; empty = private endpoint only."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "CPU node group (system add-ons, KEDA, the Ray head, Piper serving): instance types."
  type        = list(string)
  default     = ["c7i.2xlarge"]
}

variable "cpu_scaling" {
  description = "CPU node group size."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 3, max = 10 }
}

variable "gpu_instance_types" {
  description = "GPU node groups: instance types (one NVIDIA GPU each suits one chorus pod)."
  type        = list(string)
  default     = ["g6e.xlarge"]
}

variable "gpu_capacity_type" {
  description = "Real-time GPU node group: ON_DEMAND (steady latency) or SPOT (cheaper, may be reclaimed)."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "gpu_scaling" {
  description = "Real-time GPU node group size."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 2, max = 20 }
}

variable "batch_gpu_capacity_type" {
  description = "Batch (fine-tune) GPU node group: SPOT by default; workers checkpoint and resume."
  type        = string
  default     = "SPOT"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.batch_gpu_capacity_type)
    error_message = "batch_gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "batch_gpu_scaling" {
  description = "Batch GPU node group size (from zero: KEDA scales the workers, the cluster autoscaler the nodes)."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 0, max = 4 }
}

variable "gpu_disk_size_gb" {
  description = "Root disk of GPU nodes: images plus the node-local model cache (/var/lib/chorus/models)."
  type        = number
  default     = 200
}

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class."
  type        = string
  default     = "db.r7g.large"
}

variable "db_engine_version" {
  description = "RDS PostgreSQL major version."
  type        = string
  default     = "17"
}

variable "db_allocated_storage_gb" {
  description = "RDS storage (GiB); grows automatically up to 4x."
  type        = number
  default     = 100
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery)."
  type        = number
  default     = 14
}

variable "db_multi_az" {
  description = "A standby in a second zone."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the database from deletion (turn off only to tear a test stack down)."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "S3 bucket for chorus blobs and model weights; null = NAME-ACCOUNT-REGION."
  type        = string
  default     = null
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
