output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.chorus.name
}

output "cluster_endpoint" {
  description = "EKS API endpoint."
  value       = aws_eks_cluster.chorus.endpoint
}

output "node_pool_labels" {
  description = "Labels of each node group, as the deploy/k8s manifests select them."
  value       = { for name, group in local.node_groups : name => group.labels }
}

output "database_endpoint" {
  description = "PostgreSQL host:port; store.database_url = postgresql+psycopg://chorus:PASSWORD@ENDPOINT/chorus?sslmode=require."
  value       = aws_db_instance.chorus.endpoint
}

output "database_secret_arn" {
  description = "Secrets Manager secret holding the generated master password (username chorus)."
  value       = aws_db_instance.chorus.master_user_secret[0].secret_arn
}

output "bucket_name" {
  description = "S3 bucket for blobs and model weights."
  value       = aws_s3_bucket.chorus.bucket
}

output "blob_url" {
  description = "store.blob_url for chorus."
  value       = "s3://${aws_s3_bucket.chorus.bucket}/chorus"
}

output "model_source" {
  description = "MODEL_SOURCE prefix for the node-local model cache (append the model folder)."
  value       = "s3://${aws_s3_bucket.chorus.bucket}/models"
}

output "chorus_pod_role_arn" {
  description = "IAM role of the chorus service account (EKS Pod Identity)."
  value       = aws_iam_role.chorus_pods.arn
}

output "kms_key_arn" {
  description = "KMS key encrypting EKS secrets, RDS and S3."
  value       = aws_kms_key.chorus.arn
}
