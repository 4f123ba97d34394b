# Databricks notebook source
# MAGIC %md
# MAGIC # HelperFunctions
# MAGIC
# MAGIC One notebook used from another with `%run /Shared/HelperFunctions`: it defines a `Helper`
# MAGIC class that reads the storage settings from a secret scope (never from the notebook's
# MAGIC text) and mounts a storage container, or one folder of it, under `/mnt/`.
# MAGIC
# MAGIC The scope holds four secrets, as the lab's Key Vault did:
# MAGIC
# MAGIC | secret | meaning |
# MAGIC | --- | --- |
# MAGIC | `storage-account` | an Azure storage account name (ADLS Gen2), or a storage URL (`file:/…`, `s3a://…`) |
# MAGIC | `storage-sp-client-id` | the service principal's application (client) id (S3: the access key id) |
# MAGIC | `storage-sp-key` | the service principal's secret (S3: the secret key) |
# MAGIC | `storage-sp-tenant` | the Azure AD tenant id |
# MAGIC
# MAGIC Customize `DEFAULT_SCOPE` for your workspace, or pass the scope name to `Helper(...)`.

# COMMAND ----------

DEFAULT_SCOPE = "wine-lab"


class Helper:
    """Mount storage containers and folders with credentials read from a secret scope."""

    def __init__(self, scope=DEFAULT_SCOPE):
        self.scope = scope
        self.storage_account = dbutils.secrets.get(scope, "storage-account")
        self.client_id = dbutils.secrets.get(scope, "storage-sp-client-id")
        self.client_secret = dbutils.secrets.get(scope, "storage-sp-key")
        self.tenant = dbutils.secrets.get(scope, "storage-sp-tenant")

    def _is_url(self):
        return ":" in self.storage_account

    def source(self, container, folder=""):
        """The storage URL of a container (and a folder in it)."""
        if self._is_url():  # a local folder or an S3 bucket standing in for the account
            base = f"{self.storage_account.rstrip('/')}/{container}"
        else:  # ADLS Gen2, as in the lab
            base = f"abfss://{container}@{self.storage_account}.dfs.core.windows.net"
        return f"{base}/{folder.strip('/')}" if folder else base

    def configs(self):
        """The Hadoop settings a mount needs (none for a local folder)."""
        if self.storage_account.startswith("file:"):
            return {}
        if self.storage_account.startswith("s3a:"):
            return {"fs.s3a.access.key": self.client_id, "fs.s3a.secret.key": self.client_secret}
        return {
            "fs.azure.account.auth.type": "OAuth",
            "fs.azure.account.oauth.provider.type":
                "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
            "fs.azure.account.oauth2.client.id": self.client_id,
            "fs.azure.account.oauth2.client.secret": self.client_secret,
            "fs.azure.account.oauth2.client.endpoint":
                f"https://login.microsoftonline.com/{self.tenant}/oauth2/token",
        }

    @staticmethod
    def is_mounted(mount_point):
        return any(m.mountPoint == mount_point for m in dbutils.fs.mounts())

    def mount(self, source, mount_point):
        """Mount source at mount_point unless something is mounted there already."""
        if self.is_mounted(mount_point):
            print(f"{mount_point} is already mounted.")
            return mount_point
        dbutils.fs.mount(source=source, mount_point=mount_point, extra_configs=self.configs())
        print(f"Mounted {mount_point}.")
        return mount_point

    def mount_container(self, container, mount_point=None):
        """Mount a whole container at /mnt/<container>."""
        return self.mount(self.source(container), mount_point or f"/mnt/{container}")

    def mount_folder(self, container, folder, mount_point=None):
        """Mount one folder of a container at /mnt/<container>-<folder>."""
        name = folder.strip("/").replace("/", "-")
        return self.mount(self.source(container, folder), mount_point or f"/mnt/{container}-{name}")

    def unmount(self, mount_point):
        if self.is_mounted(mount_point):
            dbutils.fs.unmount(mount_point)

# COMMAND ----------

print("Helper is defined: helper = Helper('<scope>'); helper.mount_container('<container>')")
