/*
 * Brickyard's Hive metastore service: HiveMetaStore.main of the Hive 2.3 jars pyspark ships, with its
 * Thrift server socket bound to one address (127.0.0.1) instead of every interface.
 *
 * Hive 2.3 has no bind-address setting: HiveMetaStore.startMetaStore passes a null host to
 * HiveAuthUtils.getServerSocket, which then binds the wildcard address. This class does what
 * HiveMetaStore.main + startMetaStore do (read from the 2.3.10 byte code with javap -c), in the same
 * order and with the same settings, and passes the host. Only SASL (Kerberos) is refused: Brickyard never
 * enables it and its delegation-token state is private to HiveMetaStore.
 *
 * Usage: java -cp <hive-site dir>:<pyspark jars>:<this class> brickyard.LoopbackMetaStore -p PORT [-h HOST]
 *
 * Compiled by src/brickyard/compute/metastore.py (javac, against pyspark's jars) into the JVM cache.
 */
package brickyard;

import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantLock;

import org.apache.hadoop.hive.common.LogUtils;
import org.apache.hadoop.hive.common.auth.HiveAuthUtils;
import org.apache.hadoop.hive.common.metrics.common.MetricsFactory;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.conf.HiveConf.ConfVars;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.HiveMetaStore.HMSHandler;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.TServerSocketKeepAlive;
import org.apache.hadoop.hive.metastore.TSetIpAddressProcessor;
import org.apache.hadoop.hive.metastore.TUGIBasedProcessor;
import org.apache.hadoop.hive.shims.ShimLoader;
import org.apache.hadoop.hive.thrift.TUGIContainingTransport;
import org.apache.hadoop.util.StringUtils;
import org.apache.hive.common.util.HiveStringUtils;
import org.apache.hive.common.util.ShutdownHookManager;
import org.apache.thrift.TProcessor;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.protocol.TCompactProtocol;
import org.apache.thrift.protocol.TProtocol;
import org.apache.thrift.protocol.TProtocolFactory;
import org.apache.thrift.server.ServerContext;
import org.apache.thrift.server.TServer;
import org.apache.thrift.server.TServerEventHandler;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.TTransportException;
import org.apache.thrift.transport.TTransportFactory;
import org.apache.thrift.transport.layered.TFramedTransport;

public final class LoopbackMetaStore {
  private LoopbackMetaStore() {}

  public static void main(String[] args) throws Throwable {
    int port = -1;
    String host = "127.0.0.1";
    for (int i = 0; i < args.length; i++) {
      if (("-p".equals(args[i]) || "--port".equals(args[i])) && i + 1 < args.length) {
        port = Integer.parseInt(args[++i]);
      } else if (("-h".equals(args[i]) || "--host".equals(args[i])) && i + 1 < args.length) {
        host = args[++i];
      } else {
        System.err.println("usage: brickyard.LoopbackMetaStore -p PORT [-h HOST]");
        System.exit(2);
      }
    }
    // HiveMetaStore.main
    HiveConf.setLoadMetastoreConfig(true);
    final HiveConf conf = new HiveConf(HMSHandler.class);
    if (port < 0) {
      port = conf.getIntVar(ConfVars.METASTORE_SERVER_PORT);  // HiveMetastoreCli's default
    }
    if (System.getProperty("log4j.configurationFile") == null) {
      try {
        LogUtils.initHiveLog4j();
      } catch (LogUtils.LogInitializationException e) {
        HMSHandler.LOG.warn(e.getMessage());
      }
    }
    HiveStringUtils.startupShutdownMessage(HiveMetaStore.class, args, HiveMetaStore.LOG);
    HMSHandler.LOG.info("Starting hive metastore on " + host + ":" + port);
    ShutdownHookManager.addShutdownHook(() -> {
      HMSHandler.LOG.info("Shutting down hive metastore.");
      if (conf.getBoolVar(ConfVars.METASTORE_METRICS)) {
        try {
          MetricsFactory.close();
        } catch (Exception e) {
          HiveMetaStore.LOG.error("error in Metrics deinit: " + e.getClass().getName() + " " + e.getMessage(), e);
        }
      }
    });
    if (conf.getBoolVar(ConfVars.METASTORE_METRICS)) {
      try {
        MetricsFactory.init(conf);
      } catch (Exception e) {
        HiveMetaStore.LOG.error("error in Metrics init: " + e.getClass().getName() + " " + e.getMessage(), e);
      }
    }
    Lock startLock = new ReentrantLock();
    Condition startCondition = startLock.newCondition();
    AtomicBoolean startedServing = new AtomicBoolean();
    try {
      // The compactor and housekeeping threads, started once the server serves (off by default).
      hidden("startMetaStoreThreads", HiveConf.class, Lock.class, Condition.class, AtomicBoolean.class)
          .invoke(null, conf, startLock, startCondition, startedServing);
      startMetaStore(host, port, conf, startLock, startCondition, startedServing);
    } catch (Throwable t) {
      HMSHandler.LOG.error("Metastore Thrift Server threw an exception...", t);
      throw t;
    }
  }

  /** HiveMetaStore.startMetaStore (SASL off), with the server socket bound to host. */
  static void startMetaStore(String host, int port, HiveConf conf, Lock startLock, Condition startCondition,
                             AtomicBoolean startedServing) throws Throwable {
    try {
      Field remote = HiveMetaStore.class.getDeclaredField("isMetaStoreRemote");
      remote.setAccessible(true);
      remote.setBoolean(null, true);
      long maxMessageSize = conf.getLongVar(ConfVars.METASTORESERVERMAXMESSAGESIZE);
      int minWorkerThreads = conf.getIntVar(ConfVars.METASTORESERVERMINTHREADS);
      int maxWorkerThreads = conf.getIntVar(ConfVars.METASTORESERVERMAXTHREADS);
      boolean tcpKeepAlive = conf.getBoolVar(ConfVars.METASTORE_TCP_KEEP_ALIVE);
      boolean useFramedTransport = conf.getBoolVar(ConfVars.METASTORE_USE_THRIFT_FRAMED_TRANSPORT);
      boolean useCompactProtocol = conf.getBoolVar(ConfVars.METASTORE_USE_THRIFT_COMPACT_PROTOCOL);
      boolean useSSL = conf.getBoolVar(ConfVars.HIVE_METASTORE_USE_SSL);
      if (conf.getBoolVar(ConfVars.METASTORE_USE_THRIFT_SASL)) {
        throw new IllegalArgumentException(ConfVars.METASTORE_USE_THRIFT_SASL.varname
            + " is not supported by brickyard.LoopbackMetaStore");
      }
      TProtocolFactory protocolFactory;
      TProtocolFactory inputProtoFactory;
      if (useCompactProtocol) {
        protocolFactory = new TCompactProtocol.Factory();
        inputProtoFactory = new TCompactProtocol.Factory(maxMessageSize, maxMessageSize);
      } else {
        protocolFactory = new TBinaryProtocol.Factory();
        inputProtoFactory = new TBinaryProtocol.Factory(true, true, maxMessageSize, maxMessageSize);
      }
      HMSHandler baseHandler = new HMSHandler("new db based metaserver", conf, false);
      IHMSHandler handler = HiveMetaStore.newRetryingHMSHandler(baseHandler, conf);

      TTransportFactory transFactory;
      TProcessor processor;
      if (conf.getBoolVar(ConfVars.METASTORE_EXECUTE_SET_UGI)) {
        transFactory = useFramedTransport
            ? new Chained(new TFramedTransport.Factory(), new TUGIContainingTransport.Factory())
            : new TUGIContainingTransport.Factory();
        processor = new TUGIBasedProcessor<IHMSHandler>(handler);
        HiveMetaStore.LOG.info("Starting DB backed MetaStore Server with SetUGI enabled");
      } else {
        transFactory = useFramedTransport ? new TFramedTransport.Factory() : new TTransportFactory();
        processor = new TSetIpAddressProcessor<IHMSHandler>(handler);
        HiveMetaStore.LOG.info("Starting DB backed MetaStore Server");
      }

      TServerSocket serverSocket;
      if (!useSSL) {
        serverSocket = HiveAuthUtils.getServerSocket(host, port);  // Hive passes null: every interface
      } else {
        List<String> sslVersionBlacklist = new ArrayList<>();
        for (String sslVersion : conf.getVar(ConfVars.HIVE_SSL_PROTOCOL_BLACKLIST).split(",")) {
          sslVersionBlacklist.add(sslVersion);
        }
        String keyStorePath = conf.getVar(ConfVars.HIVE_METASTORE_SSL_KEYSTORE_PATH).trim();
        if (keyStorePath.isEmpty()) {
          throw new IllegalArgumentException(ConfVars.HIVE_METASTORE_SSL_KEYSTORE_PASSWORD.varname
              + " Not configured for SSL connection");
        }
        String keyStorePassword = ShimLoader.getHadoopShims().getPassword(conf,
            ConfVars.HIVE_METASTORE_SSL_KEYSTORE_PASSWORD.varname);
        serverSocket = HiveAuthUtils.getServerSSLSocket(host, port, keyStorePath, keyStorePassword,
            sslVersionBlacklist);
      }
      if (tcpKeepAlive) {
        serverSocket = new TServerSocketKeepAlive(serverSocket);
      }

      TThreadPoolServer.Args args = new TThreadPoolServer.Args(serverSocket)
          .processor(processor)
          .transportFactory(transFactory)
          .protocolFactory(protocolFactory)
          .inputProtocolFactory(inputProtoFactory)
          .minWorkerThreads(minWorkerThreads)
          .maxWorkerThreads(maxWorkerThreads);
      TServer tServer = new TThreadPoolServer(args);
      tServer.setServerEventHandler(new ConnectionEvents());
      HMSHandler.LOG.info("Started the new metaserver on port [" + port + "]...");
      HMSHandler.LOG.info("Options.minWorkerThreads = " + minWorkerThreads);
      HMSHandler.LOG.info("Options.maxWorkerThreads = " + maxWorkerThreads);
      HMSHandler.LOG.info("TCP keepalive = " + tcpKeepAlive);
      HMSHandler.LOG.info("Bound to " + host + ":" + port);
      if (startLock != null) {
        hidden("signalOtherThreadsToStart", TServer.class, Lock.class, Condition.class, AtomicBoolean.class)
            .invoke(null, tServer, startLock, startCondition, startedServing);
      }
      tServer.serve();
    } catch (Throwable x) {
      x.printStackTrace();
      HMSHandler.LOG.error(StringUtils.stringifyException(x));
      throw x;
    }
  }

  /** A private static method of HiveMetaStore (the launcher runs in the same class loader). */
  private static Method hidden(String name, Class<?>... types) throws NoSuchMethodException {
    Method m = HiveMetaStore.class.getDeclaredMethod(name, types);
    m.setAccessible(true);
    return m;
  }

  /** HiveMetaStore.ChainedTTransportFactory: child(parent(transport)). */
  private static final class Chained extends TTransportFactory {
    private final TTransportFactory parent;
    private final TTransportFactory child;

    Chained(TTransportFactory parent, TTransportFactory child) {
      this.parent = parent;
      this.child = child;
    }

    @Override
    public TTransport getTransport(TTransport trans) throws TTransportException {
      return child.getTransport(parent.getTransport(trans));
    }
  }

  /** HiveMetaStore's server event handler: the open_connections metric, and each connection's RawStore
   *  released when it closes. */
  private static final class ConnectionEvents implements TServerEventHandler {
    private final Method cleanupRawStore;

    ConnectionEvents() throws NoSuchMethodException {
      cleanupRawStore = hidden("cleanupRawStore");
    }

    @Override
    public void preServe() {
    }

    @Override
    public ServerContext createContext(TProtocol input, TProtocol output) {
      try {
        if (MetricsFactory.getInstance() != null) {
          MetricsFactory.getInstance().incrementCounter("open_connections");
        }
      } catch (Exception e) {
        HiveMetaStore.LOG.warn("Error Reporting Metastore open connection to Metrics system", e);
      }
      return null;
    }

    @Override
    public void deleteContext(ServerContext serverContext, TProtocol input, TProtocol output) {
      try {
        if (MetricsFactory.getInstance() != null) {
          MetricsFactory.getInstance().decrementCounter("open_connections");
        }
      } catch (Exception e) {
        HiveMetaStore.LOG.warn("Error Reporting Metastore close connection to Metrics system", e);
      }
      try {
        cleanupRawStore.invoke(null);
      } catch (InvocationTargetException e) {
        if (e.getCause() instanceof RuntimeException) {
          throw (RuntimeException) e.getCause();
        }
        if (e.getCause() instanceof Error) {
          throw (Error) e.getCause();
        }
        throw new IllegalStateException(e.getCause());
      } catch (IllegalAccessException e) {
        throw new IllegalStateException(e);
      }
    }

    @Override
    public void processContext(ServerContext serverContext, TTransport in, TTransport out) {
    }
  }
}
