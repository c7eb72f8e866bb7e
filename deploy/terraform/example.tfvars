# Example values: copy to terraform.tfvars and replace the VPC and subnets with yours.
#   terraform init && terraform plan -var-file=terraform.tfvars
name               = "chorus"
region             = "us-east-1"
vpc_id             = "vpc-0123456789abcdef0"
private_subnet_ids = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]

kubernetes_version           = "1.34"
endpoint_public_access_cidrs = [] # private API only; e.g. ["203.0.113.0/24"] for an office

cpu_instance_types = ["c7i.2xlarge"]
cpu_scaling        = { min = 2, desired = 3, max = 10 }

gpu_instance_types = ["g6e.xlarge"] # 1 x NVIDIA L40S
gpu_capacity_type  = "ON_DEMAND"    # or "SPOT" for cheaper, interruptible real-time capacity
gpu_scaling        = { min = 2, desired = 2, max = 20 }

batch_gpu_capacity_type = "SPOT"
batch_gpu_scaling       = { min = 0, desired = 0, max = 4 }

db_instance_class        = "db.r7g.large"
db_multi_az              = true
db_backup_retention_days = 14

tags = { team = "speech" }
